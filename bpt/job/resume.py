"""Where a resumed job picks up: which waves are done, which releases were made, and which
subsets to send again, as a pure function of what the job recorded (issue 28).

A job's progress is its `applied` record ("<epoch>:<subset>" -> outcome, written in the
same script that installs a version, so it always agrees with the weights), the release
flags of its waves and, for the sync rule, which rounds were committed. A job resumed in
place (its keys still on the Redis server) has all three; one resumed from a checkpoint file
on another server has them as the file recorded them, and the rest is derived here:

- a wave's done set is its subsets with an applied outcome;
- the wave before every wave that has an outcome was released;
- sync: a round not committed is trained again whole (its staged deltas are not in the file).

What is sent: the missing subsets of the earliest wave not done (sync: not committed), and
of every wave after it that was already released: those messages went with the job's end.
Nothing applied is trained again (a copy would be a counted duplicate, not a second merge).
"""

from __future__ import annotations

import dataclasses

from bpt.job import lifecycle

RESUMABLE = (lifecycle.FAILED, lifecycle.CANCELLED)  # what `bpt train --resume` takes back


@dataclasses.dataclass(frozen=True)
class Plan:
    done: dict[tuple[int, int], frozenset[int]]  # wave -> its subsets with an outcome
    released: frozenset[tuple[int, int]]  # waves whose following wave was sent
    committed: frozenset[tuple[int, int]]  # sync: rounds merged into a version
    send: tuple[tuple[int, int, tuple[int, ...]], ...]  # (epoch, wave, subsets) to send again
    finished: bool  # every wave done (sync: committed): the job only needs finishing
    commit: tuple[int, int] | None = None  # sync: a round complete but not committed: commit it, then move on


def wave_of(shape, epoch: int, subset: int) -> int:
    for w, members in enumerate(shape[epoch]):
        if subset in members:
            return w
    raise ValueError(f"subset {subset} is in no wave of epoch {epoch}")


def plan(shape, synchronous: bool, applied, released=None, committed=frozenset()) -> Plan:
    """applied: the "<epoch>:<subset>" fields of the job's applied record; released: the
    waves whose release flag is set (None: derive them, as for a checkpoint file);
    committed: sync, the committed rounds. A sync round not committed keeps its outcomes
    only when released is given (in place: its staged deltas are still there)."""
    committed = frozenset(committed)
    by_epoch: dict[int, set[int]] = {}
    for field in applied:
        epoch, _, subset = str(field).partition(":")
        by_epoch.setdefault(int(epoch), set()).add(int(subset))
    done: dict[tuple[int, int], set[int]] = {}
    for epoch, subsets in by_epoch.items():
        if epoch >= len(shape):
            continue
        for subset in subsets:
            done.setdefault((epoch, wave_of(shape, epoch, subset)), set()).add(subset)
    if synchronous and released is None:  # staged deltas of an uncommitted round are not kept
        done = {w: s for w, s in done.items() if w in committed}
    if released is None:
        released = {lifecycle.previous_wave(shape, *w) for w in done} - {None}
    released = frozenset(released)

    def complete(at) -> bool:
        members = shape[at[0]][at[1]]
        return len(done.get(at, ())) >= len(members) and (not synchronous or at in committed)

    at = (0, 0)
    while at is not None and complete(at):
        at = lifecycle.next_wave(shape, *at)
    finished = at is None
    commit = None
    if at is not None and synchronous and len(done.get(at, ())) >= len(shape[at[0]][at[1]]):
        commit = at  # every delta staged, the round never merged (its committer failed or was cancelled)
    send = []
    while at is not None:
        missing = tuple(s for s in shape[at[0]][at[1]] if s not in done.get(at, ()))
        if missing:
            send.append((at[0], at[1], missing))
        if at not in released:
            break
        at = lifecycle.next_wave(shape, *at)
    return Plan({w: frozenset(s) for w, s in done.items()}, released, committed, tuple(send), finished, commit)


def partition_refusal(partition: str, job_id: str) -> str | None:
    """IDPA and static jobs are planned by the scheduler's rounds, not waves: not resumable."""
    if partition == "greedy":
        return None
    return (f"job {job_id} used --partition {partition}, whose scheduling rounds cannot be resumed (only greedy "
            "jobs can): start a new job from its last model with --init-from")


def resume_refusal(status: str, job_id: str) -> str | None:
    """Why a job on the server cannot be resumed (None: it can), in one line."""
    if status in RESUMABLE:
        return None
    if status == lifecycle.DONE:
        return (f"job {job_id} is done; to train it further start a new job from its model: "
                f"`bpt train --init-from bpt-runs/{job_id}/model.safetensors ...`")
    if status == lifecycle.PAUSED:
        return f"job {job_id} is paused: `bpt resume {job_id}` continues it"
    return f"job {job_id} is {status}, not failed or cancelled: `bpt wait {job_id}` follows it"
