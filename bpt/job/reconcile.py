"""The reconciler's decisions: what an open job needs for it to move on again, as a pure
function of one snapshot of it.

Recovery used to be four mechanisms (a greedy watchdog, the IDPA scheduler's revive, the
finish takeover, all in the heartbeat thread, and the push path's own moves), none of which
knew the others' invariants. Now one loop per cluster (workers/reconciler.py, held by
whichever worker owns a Redis lease) reads a Snapshot of every open job and applies what
`decide` returns; the push path still makes the routine moves (bpt.job.lifecycle.after_push),
and this function covers what a lost message, a dead task or a dead finisher left undone.
Level-triggered: it looks at the job as it is, not at what happened, so running it twice
on the same snapshot decides the same, and every action is applied at most once (the
applier conditions each on the snapshot's status and version and on the lease's fence).

Every rule, with the test that covers it, is the table in docs/design.md ("Recovery").
"""

from __future__ import annotations

import dataclasses

from bpt.job import lifecycle

STALL_MIN_SECONDS = 30.0  # a version may stand still this long before anything is resent ...
STALL_TASKS = 3.0  # ... and at least this many times the slowest live worker's subset time
MAX_BACKLOG_WAIT = 300.0  # the wait for messages queued ahead of a job's is at most this long
SCHEDULE_STALL_TICKS = 4  # an IDPA job with no scheduling round for this many ticks gets a new chain


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One open job as the reconciler read it (Redis's clock throughout).

    wave: the earliest wave (greedy partition) not finished, or for the sync rule not
    committed; None when every wave is (the job only needs finishing). missing: that wave's
    subsets not done. committed: sync, whether that wave's round is committed (False when
    it has subsets missing). watched_version/watched_at: the version the reconciler saw
    last and since when it has stood still (None: never looked). schedule_at: IDPA and
    static, the last scheduling round's time (None: no schedule state)."""

    job_id: str
    status: str
    since: float
    now: float
    greedy: bool
    synchronous: bool
    version: int
    watched_version: int | None = None
    watched_at: float | None = None
    stall_limit: float = STALL_MIN_SECONDS
    wave: tuple[int, int] | None = None
    missing: tuple[int, ...] = ()
    committed: bool = False
    last_wave: bool = False
    live: int = 1
    schedule_at: float | None = None
    schedule_stall: float = 2.0
    spec_error: str = ""


# -- actions ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Watch:
    """Note the version seen now, and when (the start of a possible stall)."""

    version: int


@dataclasses.dataclass(frozen=True)
class Resend:
    """Send these subsets of (epoch, wave) again: their messages were lost or their tasks
    died (a second copy of one still running is a counted duplicate)."""

    epoch: int
    wave: int
    subsets: tuple[int, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class CommitRound:
    """sync: a complete round whose committing task died: merge and install it, then send
    the next round (Release), or finish the job after the last."""

    epoch: int
    wave: int


@dataclasses.dataclass(frozen=True)
class Release:
    """Send the wave after (epoch, wave) (sync: after committing it)."""

    epoch: int
    wave: int


@dataclasses.dataclass(frozen=True)
class Finish:
    """Every wave is done but nobody finished the job (its finishing task died before its
    claim, or a finisher went silent past FINISH_PATIENCE): a finish task evaluates it."""

    reason: str
    takeover: bool = False


@dataclasses.dataclass(frozen=True)
class Revive:
    """IDPA or static: start a new chain of scheduling rounds (the next round's message is
    held by a worker that died)."""

    stalled_seconds: float


@dataclasses.dataclass(frozen=True)
class Fail:
    reason: str


def decide(s: Snapshot) -> list:
    """Every action the job needs now, in the order to apply them."""
    if s.status not in lifecycle.OPEN and s.status != lifecycle.FINISHING:
        return []
    if s.spec_error:
        return [Fail(f"its spec cannot be read: {s.spec_error}")]
    if s.status == lifecycle.FINISHING:
        held = s.now - s.since
        if held > lifecycle.FINISH_PATIENCE:
            return [Finish(f"its finisher was silent for {held:.0f}s", takeover=True)]
        return []
    if not s.greedy:
        if s.status == lifecycle.PAUSED or s.schedule_at is None:
            return []  # paused: rounds plan nothing, so they look stalled without being so
        stalled = s.now - s.schedule_at
        return [Revive(round(stalled, 1))] if stalled >= s.schedule_stall else []
    if s.watched_version != s.version or s.watched_at is None or s.status == lifecycle.PAUSED:
        return [Watch(s.version)]  # moved on (or paused: the clock starts again at resume)
    stalled = s.now - s.watched_at
    if stalled < s.stall_limit:
        return []
    why = f"version {s.version} unchanged for {stalled:.0f}s"
    if s.wave is None:
        return [Finish(f"every wave is done; {why}"), Watch(s.version)]
    epoch, wave = s.wave
    if s.missing:
        if s.live < 1:
            return []  # nobody could take them: they wait in the queue (`bpt status` says why)
        return [Resend(epoch, wave, s.missing, why), Watch(s.version)]
    if s.synchronous and not s.committed:
        after = Finish(f"its last round was committed late; {why}") if s.last_wave else Release(epoch, wave)
        return [CommitRound(epoch, wave), after, Watch(s.version)]
    return [Watch(s.version)]


def stall_limit(subset_size: int, rates: list[float], queued: int = 0) -> float:
    """How long a greedy job's version may stand still before its wave is sent again: a few
    of the slowest live worker's subsets, plus the time the live workers need to work
    through the `queued` messages ahead on the shared queue (other jobs' included), at most
    MAX_BACKLOG_WAIT. rates: the live workers' samples/s (those measured)."""
    rates = [r for r in rates if r]
    base = max(STALL_MIN_SECONDS, STALL_TASKS * subset_size / min(rates)) if rates else STALL_MIN_SECONDS
    backlog = queued * subset_size / sum(rates) if rates else float(queued)
    return base + min(backlog, MAX_BACKLOG_WAIT)


def earliest_open_wave(shape, synchronous: bool, start: tuple[int, int], done, committed
                       ) -> tuple[tuple[int, int] | None, tuple[int, ...], bool]:
    """(wave, its missing subsets, committed) for the earliest wave from `start` on that is
    not finished (sync: not committed); (None, (), True) when none is. done(e, w) gives the
    set of a wave's finished subsets, committed(e, w) whether a sync round is committed:
    callbacks, so that a job of many epochs reads only the waves it walks past."""
    at = start
    while at is not None:
        epoch, wave = at
        finished = done(epoch, wave)
        missing = tuple(s for s in shape[epoch][wave] if s not in finished)
        if missing:
            return at, missing, False
        if synchronous and not committed(epoch, wave):
            return at, (), False
        at = lifecycle.next_wave(shape, epoch, wave)
    return None, (), True


def lost_workers(before: set[str], alive: set[str]) -> list[str]:
    """Workers alive at the last pass and dead at this one: each gets a worker-lost event."""
    return sorted(before - alive)


def can_train(model: str, plugin_version: str, worker_plugins: dict[str, str]) -> bool:
    """Whether a worker can build a job's model: every worker builds the registry's models
    and declared architectures; a plug-in (DIST:ENTRY) needs that plug-in installed there,
    at the job's version."""
    if ":" not in model:
        return True
    return worker_plugins.get(model) == plugin_version if plugin_version else model in worker_plugins


def why_queued(status: str, live: int, capable: int, model: str) -> str | None:
    """What a queued job waits for, in a line (None when it is not queued, or only waiting
    for its first task to start): a job submitted with no worker, or none able to build its
    model, sat queued with no hint."""
    if status != lifecycle.QUEUED:
        return None
    if live == 0:
        return ("no live worker is connected to this Redis: the job starts when one does "
                "(`bpt worker --redis-url ...`; `bpt workers` lists them)")
    if capable == 0:
        return (f"none of the {live} live workers has plug-in {model} installed: the job starts when one does "
                "(`bpt workers` lists their plug-ins)")
    return None
