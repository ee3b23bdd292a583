"""The accuracy guardrail (pure): when the global model's validation accuracy falls by more
than a margin below the best seen so far, at CONFIRM checks in a row, the job tightens its
merge rule one level. One low check is not enough: early in training, and on a small
validation slice, accuracy swings by more than the margin on its own.

Users of asynchronous training see accuracy collapse as workers grow: stale deltas from
many workers pile up faster than the model can absorb them. Each level halves AGWU's
contribution scale alpha and the staleness bound s_max (never below 1), so later pushes
count for less and the stalest are rejected. The best accuracy restarts from the fallen
value, so a further fall of the margin tightens again, up to MAX_LEVEL.
"""

from __future__ import annotations

import dataclasses

from .merge import MergeRule

MAX_LEVEL = 3
FACTOR = 0.5
CONFIRM = 3  # consecutive low checks that tighten


@dataclasses.dataclass(frozen=True)
class GuardState:
    best: float | None = None  # best validation accuracy since the last tightening
    level: int = 0
    strikes: int = 0  # consecutive checks below best - margin


def observe(state: GuardState, accuracy: float, margin: float) -> tuple[GuardState, bool]:
    """The state after one check, and whether it tightened the rule."""
    if margin > 0 and state.best is not None and accuracy < state.best - margin and state.level < MAX_LEVEL:
        if state.strikes + 1 >= CONFIRM:
            return GuardState(accuracy, state.level + 1), True
        return GuardState(state.best, state.level, state.strikes + 1), False
    best = accuracy if state.best is None else max(state.best, accuracy)
    return GuardState(best, state.level), False


def tightened(rule: MergeRule, level: int) -> MergeRule:
    """The rule in force at a guard level (level 0: the job's own). A rule whose s_max
    follows the live cluster (None) keeps following it; its alpha still halves. A bound of 0
    (reject every stale push) stays 0."""
    if level <= 0 or rule.synchronous:
        return rule
    s_max = rule.s_max if not rule.s_max else max(1, rule.s_max >> level)
    return dataclasses.replace(rule, alpha=rule.alpha * FACTOR ** level, s_max=s_max)
