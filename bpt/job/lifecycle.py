"""A job's life as a state machine: its states, the moves between them, and what a task,
a push or a cancel does in each state. Pure: broker/job_store.py applies each move with
one compare-and-set in Redis (broker/scripts/transition.lua), built from `allowed_from`.

    queued --start--> running --claim--> finishing --complete--> done
       |                 ^  |                 |
       |            resume  pause             +--> (claim again, once its finisher
       +--pause--> paused --+                       is silent for FINISH_PATIENCE)
    cancel: queued, running, paused, finishing -> cancelled
    fail:   queued, running, paused, finishing -> failed
    restart: failed, cancelled -> queued   (`bpt train --resume JOB`; done is final)

Why `finishing`: two tasks completing a job's last two waves at once both saw "not
finished" and both ran the final evaluation; the claim lets exactly one through. A finisher
that dies holding the claim is replaced after FINISH_PATIENCE seconds (Redis's clock).
Paused jobs may be claimed: a paused job's in-flight subsets still merge, and the one that
completes the last wave finishes it (else `resume` would set running a job with nothing left
to run, and `bpt wait` would poll forever).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

QUEUED, RUNNING, PAUSED, FINISHING = "queued", "running", "paused", "finishing"
DONE, FAILED, CANCELLED = "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, PAUSED, FINISHING, DONE, FAILED, CANCELLED)
ENDED = (DONE, FAILED, CANCELLED)  # ended: only `restart` leaves them (failed, cancelled: bpt.job.resume)
OPEN = (QUEUED, RUNNING, PAUSED)  # tasks of the job train (paused: they wait)
ACCEPTS_PUSHES = (RUNNING, PAUSED)  # a paused job's in-flight subsets still merge
FINISH_PATIENCE = 60.0  # seconds a finisher may hold its claim before another may take over

# move -> (states it may start from, state it leads to)
MOVES: dict[str, tuple[tuple[str, ...], str]] = {
    "start": ((QUEUED,), RUNNING),
    "pause": ((QUEUED, RUNNING), PAUSED),
    "resume": ((PAUSED,), RUNNING),
    "claim": ((RUNNING, PAUSED), FINISHING),
    "complete": ((FINISHING,), DONE),
    "cancel": ((QUEUED, RUNNING, PAUSED, FINISHING), CANCELLED),
    "fail": ((QUEUED, RUNNING, PAUSED, FINISHING), FAILED),
    "restart": ((FAILED, CANCELLED), QUEUED),  # resumed from its last version (bpt.job.resume)
}
# A move that may also start from its own target state once that state is this old: a
# finisher that died is replaced (see FINISH_PATIENCE).
TAKEOVER = {"claim": FINISH_PATIENCE}


class IllegalMove(Exception):
    """A move that the state machine does not allow from the job's current state."""


def allowed_from(move: str) -> tuple[str, ...]:
    return MOVES[move][0]


def target(move: str) -> str:
    return MOVES[move][1]


def apply(status: str, move: str, since: float = 0.0, now: float = 0.0) -> str:
    """The state after `move` from `status` (which has held since `since`), or IllegalMove.
    The Lua script decides the same way; a contract test checks they agree on every pair."""
    if move not in MOVES:
        raise IllegalMove(f"unknown move {move!r}")
    sources, to = MOVES[move]
    if status in sources:
        return to
    if status == to and move in TAKEOVER and now - since > TAKEOVER[move]:
        return to
    raise IllegalMove(f"cannot {move} a job that is {status}")


def is_legal(status: str, move: str, since: float = 0.0, now: float = 0.0) -> bool:
    try:
        apply(status, move, since, now)
        return True
    except IllegalMove:
        return False


# -- what a task does ----------------------------------------------------------------------
def on_task_start(status: str) -> str:
    """A subset or range task just arrived: 'train', 'wait' (paused: retried later) or 'skip'
    (ended, finishing, or unknown: nothing left to do for it)."""
    if status in (QUEUED, RUNNING):
        return "train"
    if status == PAUSED:
        return "wait"
    return "skip"


def on_task_error(status: str) -> str:
    """A task raised: 'fail' the job if it is still open, else 'ignore' (the error is a
    consequence of the job having ended, e.g. its staged data freed by a cancel; failing it
    would turn a done or cancelled job into a failed one)."""
    return "fail" if status in OPEN or status == FINISHING else "ignore"


# -- what happens after a push (waves of the greedy partition) -------------------------------
@dataclasses.dataclass(frozen=True)
class Release:
    """Send the wave after (epoch, wave); exactly one caller wins its claim (SET NX)."""

    epoch: int
    wave: int


@dataclasses.dataclass(frozen=True)
class CommitRound:
    """sync: merge the staged deltas of (epoch, wave) into one version (idempotent)."""

    epoch: int
    wave: int


@dataclasses.dataclass(frozen=True)
class Finish:
    """Claim the job's end (the `claim` move), evaluate, and complete it."""


def waves_to_read(shape: list[list[int]], epoch: int, wave: int) -> list[tuple[int, int]]:
    """The waves whose done counts `after_push` needs, besides the pushed one."""
    out = []
    for at in (next_wave(shape, epoch, wave), previous_wave(shape, epoch, wave)):
        if at is not None:
            out.append(at)
            before = previous_wave(shape, *at)
            if before is not None:
                out.append(before)
    final = last_wave(shape)
    out += [final, previous_wave(shape, *final) or final]
    return list(dict.fromkeys(w for w in out if w != (epoch, wave)))


def after_push(shape: list[list[int]], synchronous: bool, status: str, epoch: int, wave: int,
               done: dict[tuple[int, int], int], live: int) -> list:
    """What the task whose push made (epoch, wave) count done[(epoch, wave)] does next.

    shape: the waves of each epoch (shape[e][w] lists that wave's subsets); done: finished
    subsets per wave, at least for (epoch, wave) and waves_to_read(...); live: training
    processes in the cluster. Nothing happens in a job that no longer accepts pushes.

    sync: the wave's completion commits its round and releases the next (a barrier per
    round). Asynchronous rules: the next wave is released once at most `ahead` of this one's
    subsets are left and the wave before this one is complete (at most two waves unfinished
    at a time), and the job finishes when its last two waves are complete."""
    if status not in ACCEPTS_PUSHES:
        return []
    count = lambda e, w: done.get((e, w), 0)  # noqa: E731
    complete = lambda e, w: count(e, w) >= len(shape[e][w])  # noqa: E731
    size = len(shape[epoch][wave])
    if synchronous:
        if count(epoch, wave) < size:
            return []
        following = next_wave(shape, epoch, wave)
        return [CommitRound(epoch, wave), Release(epoch, wave) if following else Finish()]

    def release_if_due(e: int, w: int) -> list:
        if next_wave(shape, e, w) is None or len(shape[e][w]) - count(e, w) > ahead(live, len(shape[e][w])):
            return []
        before = previous_wave(shape, e, w)
        return [] if before is not None and not complete(*before) else [Release(e, w)]

    actions = release_if_due(epoch, wave)
    if count(epoch, wave) < size:
        return actions
    following = next_wave(shape, epoch, wave)
    if following is not None:  # its release may have waited for this wave to complete
        actions += release_if_due(*following)
    final = last_wave(shape)
    if following is None or following == final:
        if all(complete(*w) for w in (final, previous_wave(shape, *final) or final)):
            actions.append(Finish())
    return actions


def ahead(live: int, size: int) -> int:
    """How many unfinished subsets of a wave of `size` let the next one out: one per live
    training process, at most a quarter of the wave. Epoch boundaries are where staleness
    drops; releasing with 8 of 11 digits subsets left (8 workers) cost AGWU 4 points (96.0% to
    91.9%, 2 seeds)."""
    return min(live, size // 4)


def next_wave(shape: list[list[int]], epoch: int, wave: int) -> tuple[int, int] | None:
    if wave + 1 < len(shape[epoch]):
        return epoch, wave + 1
    if epoch + 1 < len(shape):
        return epoch + 1, 0
    return None


def previous_wave(shape: list[list[int]], epoch: int, wave: int) -> tuple[int, int] | None:
    if wave > 0:
        return epoch, wave - 1
    if epoch > 0:
        return epoch - 1, len(shape[epoch - 1]) - 1
    return None


def last_wave(shape: list[list[int]]) -> tuple[int, int]:
    return len(shape) - 1, len(shape[-1]) - 1


class Shape(Sequence):
    """The waves of every epoch of a job (shape[e][w] lists that wave's subsets), each epoch
    computed when first read: a push reads a few epochs (its own, the next, the previous and
    the last), where building every epoch's waves took 7.1 s a push at 200,000 epochs and
    0.09 s for an MNIST-size 100-epoch job (issue 26, finding 9). plan: anything with
    `epochs` and `waves(epoch)` (a JobSpec)."""

    def __init__(self, plan):
        self.spec, self._epochs = plan, {}

    def __len__(self) -> int:
        return self.spec.epochs

    def __getitem__(self, epoch):
        if isinstance(epoch, slice):
            return [self[e] for e in range(*epoch.indices(len(self)))]
        if epoch < 0:
            epoch += len(self)
        if not 0 <= epoch < len(self):
            raise IndexError(epoch)
        if epoch not in self._epochs:
            self._epochs[epoch] = self.spec.waves(epoch)
        return self._epochs[epoch]
