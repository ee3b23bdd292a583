"""Where a worker trains: the CPU or one CUDA device, and in which precision.

Chosen per worker (`bpt worker --device`), not per job: a job runs on a cluster of uneven
machines, and only weights travel between them (as float32 numpy arrays), so a GPU worker
and a CPU worker merge into the same global model."""

from __future__ import annotations

import os

# Ask NVML, not the CUDA runtime, whether there is a GPU: a runtime call in the worker's main
# process would make every forked pool process fail with "Cannot re-initialize CUDA in forked
# subprocess". Set before torch answers any CUDA question in this process.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402

from bpt.model.device_names import PRECISIONS, check  # noqa: F401 - where callers find them
from bpt.errors import ConfigError


def resolve(name: str) -> torch.device:
    """auto: the first CUDA device when there is one, else the CPU. Asking for CUDA on a
    machine without it is an error, not a silent fall-back to a CPU."""
    check(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name}: this machine has no CUDA device (torch {torch.__version__})")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device("cpu")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast on CUDA by default (auto); fp32 everywhere else unless asked."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def describe(device: torch.device) -> str:
    """What `bpt workers` shows: cpu or cuda:N. No device name: asking for it initialises
    CUDA, which the worker's main process must not do before Celery forks its pool."""
    return str(device)
