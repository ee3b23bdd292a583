"""A job's local training recipe (batch size, lr, optimizer, schedule, augmentation) and
the names each field may take: plain data, no torch, so that a job spec can be read and
checked by commands that never train (`bpt status`, `bpt jobs`). bpt.train.training trains with it."""

from __future__ import annotations

import dataclasses

STRATEGIES = ("auto", "torch", "tasks")  # the inner layer's (bpt.train.inner)
OPTIMIZERS = ("sgd", "adamw")
LR_SCALINGS = ("sqrt", "none")
AUGMENTATIONS = ("crop", "flip")  # random crop after zero padding, horizontal flip: training only


@dataclasses.dataclass(frozen=True)
class TrainParams:
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9  # sgd; AdamW uses its betas
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    lr_schedule: str = "constant"  # bpt.train.schedule, over the job's global progress
    warmup_epochs: float = 0.0
    step_every: int = 0  # step schedule: epochs between two x0.1 steps (0: a third of the epochs)
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()  # of AUGMENTATIONS
    lr_scaling: str = "none"  # of LR_SCALINGS: "sqrt", the local lr x sqrt(K) under the rules that average K deltas

    def check(self) -> None:
        from bpt.errors import ConfigError
        from bpt.train.schedule import SCHEDULES

        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if not 0 <= self.label_smoothing < 1 or not self.weight_decay >= 0 or not self.warmup_epochs >= 0:
            raise ConfigError("label smoothing must be in [0, 1), weight decay and warm-up >= 0")
        if self.lr_scaling not in LR_SCALINGS:
            raise ConfigError(f"unknown lr scaling {self.lr_scaling!r}; choose one of {', '.join(LR_SCALINGS)}")
        if self.step_every < 0:
            raise ConfigError(f"step_every must be >= 0, got {self.step_every}")
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
