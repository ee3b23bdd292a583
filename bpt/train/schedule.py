"""Learning-rate schedules that follow the job's global progress, not each task's.

A subnetwork trains a few hundred samples at a time; a schedule restarted by every task
would warm up and decay inside each one. Instead a task asks for the rate at the job's
progress, a number in [0, 1] that the job spec computes from the epoch and the pulled
version (JobSpec.progress), so every worker trains at the rate a single process would use
at the same point of the run."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "step")
STEP_FACTOR = 0.1  # step: multiply by this every step_every epochs
WARMUP_FLOOR = 0.01  # a warm-up starts at this share of the rate, not at 0 (no zero-lr tasks)


def lr_factor(kind: str, progress: float, epochs: int, warmup_epochs: float = 0.0, step_every: int = 0) -> float:
    """The share of the base learning rate at this point of the job."""
    progress = min(1.0, max(0.0, progress))
    at = progress * epochs  # in epochs
    if warmup_epochs > 0 and at < warmup_epochs:
        return max(WARMUP_FLOOR, at / warmup_epochs)
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        span = max(epochs - warmup_epochs, 1e-9)
        done = min(1.0, max(0.0, (at - warmup_epochs) / span))
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if kind == "step":
        every = step_every or max(1, epochs // 3)
        return STEP_FACTOR ** int(at // every)
    raise ValueError(f"unknown schedule {kind!r}")


AVERAGING_RULES = ("normalized", "sync")
MAX_LR_SCALE = 4.0  # sqrt(16): at K = 64 the uncapped x8 diverged (LeNet-5, local lr 0.16, emulator)


def lr_scale(scaling: str, rule: str, workers: int) -> float:
    """The factor on each worker's lr for K training processes: sqrt(K) under the rules that
    merge K deltas as one step (normalized divides each push by K; sync averages a round), 1
    otherwise or with scaling "none".

    Averaging K deltas is one step with a K times larger batch, so each sample moves the model
    1/K as far as in one process; the square-root scaling rule for a K times larger batch
    (Krizhevsky 2014; Hoffer et al. 2017) gives some of that back without the local
    instability of linear scaling. Measured (issue 23): digits-aug, 16 real workers, 4 epochs,
    LeNet-5 with cosine: local lr 0.02 ended at 0.861, 0.08 (0.02 x sqrt(16)) at 0.961 and
    0.05 at 0.955; in the emulator, server steps above 1 / K (K^0.5 / K, full deltas, FedBuff
    at 2x) reached Fashion-MNIST's 87% later than normalized or not at all (docs/scaling.md).
    Capped at MAX_LR_SCALE: on Fashion-MNIST at K = 64 in the emulator, x8 (local lr 0.16)
    went to chance."""
    if scaling == "sqrt" and rule in AVERAGING_RULES and workers > 1:
        return min(MAX_LR_SCALE, math.sqrt(workers))
    return 1.0
