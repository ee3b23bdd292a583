"""Device and precision names as a user types them, checked without importing torch (the
settings of every command check them; bpt.model.devices resolves them)."""

from __future__ import annotations

import re

from bpt.errors import ConfigError

DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRECISIONS = ("auto", "fp32", "bf16")


def check(name: str) -> str:
    if not DEVICE.match(name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name
