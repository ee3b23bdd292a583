"""The accuracy guardrail (pure): when the global model's validation accuracy falls below the
best seen so far by more than noise can explain, at CONFIRM checks in a row, the job halves
its merge rule's contribution scale alpha; when accuracy is back near its peak at CONFIRM
checks in a row, it gives one halving back.

Users of asynchronous training see accuracy collapse as workers grow: stale deltas from
many workers pile up faster than the model can absorb them; a smaller alpha makes every push
count for less. What the guardrail must not do is read noise as a collapse: on a 48-image
validation slice one image is 2 points, and an earlier version, which compared checks with a
fixed 5-point margin, fired twice on a 3-class job's early plateau, halved alpha and the
staleness bound, never relaxed, and refused every push of staleness >= 2 from then on: the
job ended at 0.383 where it reached 0.775 without the guardrail (issue 23). So:

- a fall counts only when it is larger than the margin AND than the noise of two checks on
  a slice of that size (a one-sided 99% bound on the difference of two binomial proportions);
- only alpha tightens: the staleness bound stays the job's own (2 x the live training
  processes by default); the guardrail never lowers it, since K - 1 is the steady-state
  staleness and a bound below it refuses most pushes;
- a level is given back once accuracy is within that bound of its peak again.
"""

from __future__ import annotations

import dataclasses
import math

from bpt.train.merge import MergeRule

MAX_LEVEL = 3
FACTOR = 0.5
CONFIRM = 3  # consecutive checks that tighten, or relax
Z = 2.33  # one-sided 99% normal quantile: the noise bound's width


@dataclasses.dataclass(frozen=True)
class GuardState:
    best: float | None = None  # best validation accuracy since the last tightening: falls are measured from it
    level: int = 0
    strikes: int = 0  # consecutive checks significantly below best
    peak: float | None = None  # best validation accuracy ever: recovery is measured against it
    recoveries: int = 0  # consecutive checks back near the peak while tightened


def fall_bound(reference: float, samples: int, margin: float) -> float:
    """How far below `reference` one check on `samples` images must fall to count: the
    margin, or Z standard errors of the difference of two checks, whichever is larger
    (on 48 images at 50% that is 24 points; on 256 at 90%, 6)."""
    n = max(1, samples)
    p = min(max(reference, 0.5 / n), 1 - 0.5 / n)
    return max(margin, Z * math.sqrt(2 * p * (1 - p) / n))


def observe(state: GuardState, accuracy: float, margin: float, samples: int) -> tuple[GuardState, str | None]:
    """The state after one check of `samples` images, and what it did: "tightened",
    "relaxed" or None. margin 0 turns the guardrail off."""
    if margin <= 0:
        return state, None
    peak = accuracy if state.peak is None else max(state.peak, accuracy)
    if state.best is None:
        return GuardState(accuracy, 0, 0, peak), None
    if state.level > 0 and accuracy >= state.peak - fall_bound(state.peak, samples, margin):
        if state.recoveries + 1 >= CONFIRM:
            return GuardState(max(state.best, accuracy), state.level - 1, 0, peak), "relaxed"
        return dataclasses.replace(state, best=max(state.best, accuracy), strikes=0, peak=peak,
                                   recoveries=state.recoveries + 1), None
    if accuracy < state.best - fall_bound(state.best, samples, margin) and state.level < MAX_LEVEL:
        if state.strikes + 1 >= CONFIRM:
            return GuardState(accuracy, state.level + 1, 0, peak), "tightened"  # falls measured from here now
        return dataclasses.replace(state, strikes=state.strikes + 1, peak=peak, recoveries=0), None
    return GuardState(max(state.best, accuracy), state.level, 0, peak), None


def tightened(rule: MergeRule, level: int) -> MergeRule:
    """The rule in force at a guard level (level 0: the job's own): alpha halved per level,
    the staleness bound left as the job set it (a live bound keeps following the cluster)."""
    if level <= 0 or rule.synchronous:
        return rule
    return dataclasses.replace(rule, alpha=rule.alpha * FACTOR ** level)


def rule_in_force(rule: MergeRule, level: int, live: int) -> MergeRule:
    """What a push is merged with: the job's rule resolved for `live` training processes,
    at the guard's level. The one call the push path makes (workers/subnetwork.py)."""
    return tightened(rule.resolved(live), level)
