"""The global weight update rules (the contract in shared/bpt-cnn.md), as pure functions.

A subnetwork j pulled W at version v_j, trained, and pushes D_j = W_j - W(v_j) with its
sample count n_j and its accuracy a_j on a validation slice. With the current version v and
staleness s = v - v_j:

- normalized (the default): reject if s > s_max, else W <- W + alpha * q_j * D_j / K, K the
         live training processes; q_j = a_j / mean(recent accepted a), clipped to [0, 2];
- agwu (the paper's):  reject if s > s_max, else W <- W + alpha * gamma**s * q_j * D_j;
- async: the same with gamma = 1 and q_j = 1 (Downpour/Hogwild-style baseline);
- adascale: normalized times AdaScale's gain ratio r in [1, K], estimated from the gradient
         statistics the workers push (a rule with state: bpt.train.rule_step);
- sync:  a barrier per round, W <- W + sum(q_j n_j D_j) / sum(q_j n_j).

The asynchronous rules' scales are steps of bpt.train.rule_step (which can keep state); this
module holds what every rule shares.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from bpt.errors import ConfigError

RULES = ("normalized", "agwu", "async", "adascale", "sync")
DEFAULT_RULE = "normalized"
RECENT_ACCURACIES = 16  # accepted pushes whose accuracies form q's reference
Weights = Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class MergeRule:
    kind: str = DEFAULT_RULE
    alpha: float = 1.0  # contribution scale
    gamma: float = 0.5  # agwu's staleness decay, in (0, 1]
    s_max: int | None = None  # pushes staler than this are rejected; None: 2 x the live workers

    def __post_init__(self):
        if self.kind not in RULES:
            raise ConfigError(f"unknown merge rule {self.kind!r}; choose one of {', '.join(RULES)}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be positive, got {self.alpha}")
        if self.s_max is not None and self.s_max < 0:
            raise ConfigError(f"s_max must be >= 0, got {self.s_max}")

    @property
    def synchronous(self) -> bool:
        return self.kind == "sync"

    def resolved(self, live: int) -> "MergeRule":
        """The rule with its staleness bound fixed for `live` training processes."""
        return dataclasses.replace(self, s_max=self.staleness_bound(live))

    def staleness_bound(self, live: int) -> int:
        """s_max in force with `live` training processes: the job's own, or 2 x live."""
        return self.s_max if self.s_max is not None else 2 * max(1, live)


def accuracy_weight(accuracy: float, recent: Sequence[float]) -> float:
    """q_j: this push's accuracy relative to recently accepted ones, clipped to [0, 2].

    With no history yet (or a history of zeros) every push counts as average, q = 1.
    """
    mean = float(np.mean(recent)) if len(recent) else 0.0
    if mean <= 0:
        return 1.0
    return float(np.clip(accuracy / mean, 0.0, 2.0))


def apply_delta(weights: Weights, delta: Weights, scale: float,
                out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """W + scale * D, tensor by tensor, into `out` if given (arrays shaped like W). Integer
    buffers (BatchNorm's batch counter) take the unscaled delta: they count, they are not learned."""
    _check_same_layout(weights, delta)
    out = {name: np.empty_like(w) for name, w in weights.items()} if out is None else out
    for name, w in weights.items():
        d, target = delta[name], out[name]
        if np.issubdtype(w.dtype, np.floating):
            np.multiply(d, w.dtype.type(scale), out=target, casting="same_kind")
            np.add(target, w, out=target)
        else:
            np.add(w, d, out=target, casting="unsafe")
    return out


def sync_merge(weights: Weights, deltas: Sequence[Weights], sample_counts: Sequence[int],
               qs: Sequence[float], alpha: float = 1.0) -> dict[str, np.ndarray]:
    """One synchronous round: W + alpha * sum(q_j n_j D_j) / sum(q_j n_j)."""
    if not deltas or not (len(deltas) == len(sample_counts) == len(qs)):
        raise ValueError("sync_merge needs one sample count and one q per delta")
    mass = np.asarray(qs, dtype=np.float64) * np.asarray(sample_counts, dtype=np.float64)
    if mass.sum() <= 0:  # every subnetwork scored zero: fall back to plain sample weighting
        mass = np.asarray(sample_counts, dtype=np.float64)
    share = mass / mass.sum()
    out = dict(weights)
    for name, w in weights.items():
        if np.issubdtype(w.dtype, np.floating):
            acc = sum(np.float32(s) * d[name] for s, d in zip(share, deltas))
            out[name] = (w + np.float32(alpha) * acc).astype(w.dtype, copy=False)
        else:
            out[name] = w + max(d[name] for d in deltas)
    return out


def subtract(a: Weights, b: Weights) -> dict[str, np.ndarray]:
    """a - b, tensor by tensor: the delta a subnetwork pushes."""
    _check_same_layout(a, b)
    return {name: a[name] - b[name] for name in a}


def _check_same_layout(a: Weights, b: Weights) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"weight names differ: {sorted(set(a) ^ set(b))}")
    for name in a:
        if a[name].shape != b[name].shape:
            raise ValueError(f"tensor {name!r} has shape {b[name].shape}, expected {a[name].shape}")
