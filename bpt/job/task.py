"""What a subset or range task does after its push, as a pure function of what the push
returned (issue 27): the task reads pull, train, push, decide, apply, and this is the
decide. workers/subnetwork.py applies the actions in order.

- Evaluate: the new version is on the evaluation interval (test and validation scores, a
  row of metrics.csv; a target accuracy or patience may finish the job there, and then
  nothing after it runs).
- Guard: an asynchronous job's guardrail is due at this version (bpt.train.guardrail).
- MoveOn: a greedy task moves the job on (release a wave, commit a round, finish:
  bpt.job.lifecycle.after_push decides which); a range task asks the scheduler for work.

A push that merged nothing (closed: the job ended meanwhile) or whose pulled version the
store lost (retrained first) never gets here.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Evaluate:
    version: int


@dataclasses.dataclass(frozen=True)
class Guard:
    version: int


@dataclasses.dataclass(frozen=True)
class MoveOn:
    greedy: bool  # release waves (subset tasks), or ask the scheduler for work (range tasks)


def after_push(version: int, installed: bool, eval_interval: int, guard_due: bool, guardrail_on: bool,
               synchronous: bool, greedy: bool) -> list:
    """installed: the push produced new global weights (accepted or merged into a version);
    guard_due: the spec's guard schedule includes this version."""
    actions = []
    if installed and version % eval_interval == 0:
        actions.append(Evaluate(version))
    if installed and guardrail_on and not synchronous and guard_due:
        actions.append(Guard(version))
    actions.append(MoveOn(greedy))
    return actions
