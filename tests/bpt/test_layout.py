"""Issue 27's layout: bpt/ in subpackages by concern, the old module names still working,
the job's package without torch, and no import circles among bpt's own modules."""

import ast
import os
import subprocess
import sys
import warnings

import pytest

from bpt import _moved

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_every_old_module_name_is_the_moved_module_with_a_deprecation_warning(old):
    import importlib

    new = importlib.import_module(_moved.MOVED[old])
    sys.modules.pop(f"bpt.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aliased = importlib.import_module(f"bpt.{old}")
    assert aliased is new and new.__spec__.name == _moved.MOVED[old]
    assert any(issubclass(w.category, DeprecationWarning) and _moved.MOVED[old] in str(w.message) for w in caught)


def test_the_names_benchmarks_and_plug_ins_import_still_work():
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from bpt.emulator import Job, Cluster, emulate\n"
            "from bpt import merge, datasets\n"
            "from bpt.datasets import load, DatasetSpec\n"
            "from bpt.models import build_model\n"
            "import bpt.plan.emulator as e, bpt.train.merge as m\n"
            "assert emulate is e.emulate and merge is m\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_job_package_imports_no_torch():
    code = ("import sys\nimport bpt.job.jobspec, bpt.job.lifecycle, bpt.job.reconcile, bpt.job.resume, "
            "bpt.job.metrics, bpt.job.recipe\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def _module_imports(path: str) -> set[str]:
    """bpt.* modules a file imports, at its top level or inside a function."""
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bpt"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.add("." + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bpt"))
    return found


def test_no_import_circles_among_bpts_pure_and_data_modules():
    modules = {}
    for package in ("data", "model", "train", "plan", "job"):
        for name in os.listdir(os.path.join(ROOT, "bpt", package)):
            if name.endswith(".py") and name != "__init__.py":
                modules[f"bpt.{package}.{name[:-3]}"] = os.path.join(ROOT, "bpt", package, name)
    graph = {m: {d for d in _module_imports(p) if d in modules} for m, p in modules.items()}

    def visit(node, path):
        for nxt in graph[node]:
            assert nxt not in path, " -> ".join(path + [nxt])
            visit(nxt, path + [nxt])

    for m in graph:
        visit(m, [m])
