"""What a subset or range task does after its push, as a pure function of what the push
returned (issue 27): the task reads pull, train, push, decide, apply, and this is the
decide. workers/subnetwork.py applies the actions in order.

- Evaluate: the new version is on the evaluation interval (test and validation scores, a
  row of metrics.csv; a target accuracy or patience may finish the job there, and then
  nothing after it runs).
- Guard: an asynchronous job's guardrail is due at this version (bpt.train.guardrail).
- MoveOn: a greedy task moves the job on (release a wave, commit a round, finish:
  bpt.job.lifecycle.after_push decides which); a range task asks the scheduler for work.

A sync task's push only stages its delta; the task that completes a round commits it, and
after_commit decides whether that round's version is evaluated.

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


def after_commit(version: int, eval_every: int, wave: int, waves_in_epoch: int) -> list:
    """What the task that committed a sync round does with the round's version: evaluate it
    when the round ends its epoch, or every eval_every versions when the job sets that. A
    sync version is a round of K subsets, so the asynchronous default (every n_subsets
    versions, once an epoch) would evaluate once every K epochs. The job's last round is
    evaluated by its finish instead (the caller skips a job that is no longer open)."""
    due = version % eval_every == 0 if eval_every else wave == waves_in_epoch - 1
    return [Evaluate(version)] if due else []
