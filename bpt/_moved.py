"""The names bpt's modules had before they moved into subpackages (issue 27), kept working
for scripts, plug-ins and benchmarks: `import bpt.emulator`, `from bpt.datasets import
load` and `from bpt import merge` give the module at its new place (the same module object,
so a patch of one is a patch of the other), with a DeprecationWarning naming it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "datasets": "bpt.data.datasets", "image_folder": "bpt.data.image_folder", "shared_data": "bpt.data.shared_data",
    "prepare": "bpt.data.prepare",
    "models": "bpt.model.registry", "architecture": "bpt.model.architecture", "plugins": "bpt.model.plugins",
    "devices": "bpt.model.devices", "device_names": "bpt.model.device_names", "catalog": "bpt.model.catalog",
    "training": "bpt.train.training", "inner": "bpt.train.inner", "merge": "bpt.train.merge",
    "guardrail": "bpt.train.guardrail", "schedule": "bpt.train.schedule", "learning": "bpt.train.learning",
    "noise_scale": "bpt.train.noise_scale", "evaluation": "bpt.train.evaluation",
    "partition": "bpt.plan.partition", "idpa": "bpt.plan.idpa", "sharding": "bpt.plan.sharding",
    "simulator": "bpt.plan.simulator", "emulator": "bpt.plan.emulator", "baselines": "bpt.plan.baselines",
    "jobspec": "bpt.job.jobspec", "lifecycle": "bpt.job.lifecycle", "reconcile": "bpt.job.reconcile",
    "resume": "bpt.job.resume", "metrics": "bpt.job.metrics", "recipe": "bpt.job.recipe",
}


def _warn(old: str) -> None:
    warnings.warn(f"bpt.{old} moved to {MOVED[old]}; the old name will go in a later release",
                  DeprecationWarning, stacklevel=4)


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("bpt.") and fullname[4:] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    _specs: dict = {}  # module name -> its own spec, which the import system writes the alias's over

    def create_module(self, spec):
        _warn(spec.name[4:])
        module = importlib.import_module(MOVED[spec.name[4:]])
        self._specs.setdefault(module.__name__, module.__spec__)
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs[module.__name__]  # nothing to run: the module was loaded at its new place


def install() -> None:
    if not any(isinstance(f, _OldNames) for f in sys.meta_path):
        sys.meta_path.append(_OldNames())


def attribute(name: str):
    """`from bpt import merge` (an attribute of the package, not yet a submodule)."""
    if name in MOVED:
        _warn(name)
        return importlib.import_module(MOVED[name])
    raise AttributeError(f"module 'bpt' has no attribute {name!r}")
