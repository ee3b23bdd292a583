"""Splitting an epoch into subsets and subsets into waves (pure, no I/O).

A subset is a half-open index range [start, end) into the staged training array, so any
worker can fetch exactly its rows. A wave is the set of subsets released together: all of
an epoch for the asynchronous rules, one round of `workers` subsets for the synchronous one.
"""

from __future__ import annotations

import random


def default_subset_size(n_train: int) -> int:
    """n/16 within 128..2048: a task outside forward/backward costs 28% of its wall time at
    256 samples, 12% at 1024 and 8% at 2048, and no less beyond (benchmarks/overhead.py).
    Sixteen tasks an epoch where the bounds allow."""
    return int(min(2048, max(128, n_train // 16)))


def subsets(n_samples: int, subset_size: int) -> list[tuple[int, int]]:
    """Cover [0, n_samples) with consecutive ranges of subset_size (the last may be shorter,
    but never under half: a short tail is folded into the previous range)."""
    if n_samples < 1 or subset_size < 1:
        raise ValueError("n_samples and subset_size must be positive")
    bounds = list(range(0, n_samples, subset_size)) + [n_samples]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < subset_size // 2:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def epoch_order(n_subsets: int, epoch: int, seed: int) -> list[int]:
    """The order subsets are released in this epoch: a seeded shuffle, different per epoch."""
    order = list(range(n_subsets))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def waves(n_subsets: int, epoch: int, seed: int, wave_size: int | None) -> list[list[int]]:
    """The waves of one epoch: one wave of everything, or rounds of wave_size subsets."""
    order = epoch_order(n_subsets, epoch, seed)
    if wave_size is None or wave_size >= n_subsets:
        return [order]
    return [order[i:i + wave_size] for i in range(0, n_subsets, wave_size)]
