"""Installed plug-in models: Python packages on every worker expose model factories through
the entry-point group `bpt.models`.

A job names one as DISTRIBUTION:ENTRY (`--model mypkg:resnet50`). The name is only looked
up in the table of what is installed here (importlib.metadata); the module the entry point
loads comes from the installed package's own metadata, never from the job, so a job cannot
make a worker import anything that was not installed on purpose. The job carries the
distribution's version; a worker with another version declines the task.

A factory is called as factory(input_shape=(C, H, W), num_classes=K) and returns an
nn.Module whose forward maps (N, C, H, W) images to (N, K) logits.
"""

from __future__ import annotations

import re
from importlib import metadata

from bpt.errors import ConfigError, ModelUnavailable

GROUP = "bpt.models"
REFERENCE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99}):([A-Za-z0-9_.-]{1,100})$")


def is_reference(name: str) -> bool:
    return bool(REFERENCE.match(name))


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def installed() -> dict[str, str]:
    """Every plug-in model on this machine: {"dist:entry": version}."""
    out = {}
    for ep in metadata.entry_points(group=GROUP):
        if ep.dist is not None:
            out[f"{_normal(ep.dist.name)}:{ep.name}"] = ep.dist.version
    return out


def version_of(reference: str) -> str:
    """The installed version of the distribution providing this plug-in, or ConfigError
    (at submit: the submitting machine must have it to check the shapes)."""
    try:
        return _find(reference)[1]
    except ModelUnavailable as e:
        raise ConfigError(str(e)) from None


def _find(reference: str):
    match = REFERENCE.match(reference)
    if not match:
        raise ModelUnavailable(f"{reference!r} is not a plug-in model name (DISTRIBUTION:ENTRY)")
    distribution, entry = _normal(match.group(1)), match.group(2)
    for ep in metadata.entry_points(group=GROUP):
        if ep.name == entry and ep.dist is not None and _normal(ep.dist.name) == distribution:
            return ep, ep.dist.version
    have = ", ".join(sorted(installed())) or "none"
    raise ModelUnavailable(f"plug-in model {reference} is not installed here (entry point group {GROUP}; "
                           f"installed: {have})")


def build(reference: str, version: str, input_shape: tuple[int, int, int], num_classes: int):
    """The plug-in's model, if the installed distribution has the job's version."""
    ep, have = _find(reference)
    if version and have != version:
        raise ModelUnavailable(f"plug-in model {reference} is version {have} here, the job needs {version}")
    from torch import nn

    try:
        factory = ep.load()
        model = factory(input_shape=tuple(input_shape), num_classes=num_classes)
    except Exception as e:  # its import or its factory failed on this machine
        raise ModelUnavailable(f"plug-in model {reference} ({ep.value}) failed here: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelUnavailable(f"plug-in model {reference} returned a {type(model).__name__}, not a torch nn.Module")
    return model
