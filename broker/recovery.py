"""What the reconciler reads and writes in Redis: the index of open jobs, its lease with a
fencing token, one snapshot of an open job, and the fenced application of an action.

The decisions are bpt.job.reconcile (pure); the loop that applies them is
workers/reconciler.py. Walking only the open jobs is what keeps a pass cheap: it used to
scan every job ever indexed from the heartbeat thread, two round trips each, and with 8,000
finished jobs one beat outlasted the liveness timeout (issue 26, finding 4)."""

from __future__ import annotations

import json

import redis

from bpt.job import lifecycle
from bpt.job import reconcile
from bpt.errors import ConfigError
from bpt.job.jobspec import JobSpec

from .keys import JOBS_INDEX, OPEN_JOBS, OPEN_JOBS_BUILT, RECONCILER_FENCE, RECONCILER_LEASE, JobKeys

ACTED_TTL = 86_400  # seconds an applied action's marker is kept (a decision is never older)


# -- the index of open jobs -------------------------------------------------------------
def open_jobs(client: redis.Redis) -> list[str]:
    """Ids of the jobs that have not ended, as far as the index knows (a job that ended
    since the last pass is still there until the pass prunes it). Filled once from the
    whole job index for jobs submitted before it existed."""
    if not client.exists(OPEN_JOBS_BUILT):
        ids = [j.decode() for j in client.zrange(JOBS_INDEX, 0, -1)]
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(JobKeys(job_id).state, "status")
        opened = [j for j, s in zip(ids, pipe.execute()) if s and s.decode() not in lifecycle.ENDED]
        pipe = client.pipeline(transaction=True)
        if opened:
            pipe.sadd(OPEN_JOBS, *opened)
        pipe.set(OPEN_JOBS_BUILT, 1)
        pipe.execute()
    return sorted(j.decode() for j in client.smembers(OPEN_JOBS))


def mark_open(pipe, job_id: str) -> None:
    """In the job's creating transaction."""
    pipe.sadd(OPEN_JOBS, job_id)


def mark_closed(client, job_id: str) -> None:
    client.srem(OPEN_JOBS, job_id)


# -- the lease -------------------------------------------------------------------------
def hold_lease(client: redis.Redis, scripts: dict, holder: str, ttl: float) -> str | None:
    """Take the reconciler lease, or keep it if `holder` has it; returns its value
    ("<fence>:<holder>") while held, None while another holder has it."""
    value = scripts["lease"](keys=[RECONCILER_LEASE, RECONCILER_FENCE], args=[holder, int(ttl * 1000)])
    return value.decode() if value else None


def give_back_lease(client: redis.Redis, holder: str) -> None:
    """Delete the lease if `holder` has it (a worker shutting down)."""
    value = client.get(RECONCILER_LEASE)
    if value and value.decode().split(":", 1)[-1] == holder:
        client.delete(RECONCILER_LEASE)


def lease_holder(client: redis.Redis) -> str | None:
    value = client.get(RECONCILER_LEASE)
    return value.decode() if value else None


# -- one open job, as the reconciler sees it ---------------------------------------------
def snapshot(client: redis.Redis, job_id: str, now: float, live: int, rates: list[float], queued: int,
             schedule_stall: float) -> reconcile.Snapshot | None:
    """The job as it is now (None if its state is gone). live: training processes that could
    take its tasks; rates: their samples/s; queued: messages on the shared train queue."""
    keys = JobKeys(job_id)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.state)
    pipe.get(keys.spec)
    pipe.hget(keys.weights, "version")
    pipe.hgetall(keys.reconciler)
    pipe.get(keys.schedule)
    raw_state, raw_spec, version, watched, schedule = pipe.execute()
    if not raw_state:
        return None
    state = {k.decode(): v.decode() for k, v in raw_state.items()}
    watched = {k.decode(): v.decode() for k, v in watched.items()}
    base = dict(job_id=job_id, status=state.get("status", "unknown"), since=float(state.get("since", now)), now=now,
                version=int(version or 0), live=live, schedule_stall=schedule_stall,
                watched_version=int(watched["version"]) if "version" in watched else None,
                watched_at=float(watched["at"]) if "at" in watched else None)
    try:
        spec = JobSpec.from_json(raw_spec) if raw_spec is not None else None
    except (ConfigError, ValueError) as e:
        return reconcile.Snapshot(greedy=True, synchronous=False, spec_error=str(e)[:200], **base)
    if spec is None:
        return reconcile.Snapshot(greedy=True, synchronous=False, spec_error="the spec is missing", **base)
    if spec.partition != "greedy":
        at = json.loads(schedule).get("at") if schedule else None
        return reconcile.Snapshot(greedy=False, synchronous=False, schedule_at=at, **base)
    wave, missing = open_wave(client, spec, int(state.get("epoch", 0)))
    return reconcile.Snapshot(
        greedy=True, synchronous=spec.rule.synchronous, wave=wave, missing=missing,
        committed=wave is None, last_wave=wave == lifecycle.last_wave(lifecycle.Shape(spec)),
        stall_limit=reconcile.stall_limit(spec.subset_size, rates, queued), **base)


def open_wave(client: redis.Redis, spec: JobSpec, epoch: int) -> tuple[tuple[int, int] | None, tuple[int, ...]]:
    """The earliest wave of a greedy job not finished (sync: not committed), looking from the
    epoch before `epoch` (the job's: the next epoch is released before one ends), and its
    missing subsets; (None, ()) when every wave is."""
    keys = JobKeys(spec.job_id)
    done = lambda e, w: {int(m) for m in client.smembers(keys.wave_done(e, w))}  # noqa: E731
    committed = lambda e, w: bool(client.exists(keys.round_committed(e, w)))  # noqa: E731
    wave, missing, _ = reconcile.earliest_open_wave(lifecycle.Shape(spec), spec.rule.synchronous,
                                                    (max(0, epoch - 1), 0), done, committed)
    return wave, missing


def fenced(client: redis.Redis, scripts: dict, lease: str, snap: reconcile.Snapshot, marker: str = "",
           ttl: float = ACTED_TTL, **fields) -> bool:
    """Apply one action's Redis side if the caller still holds `lease`, the job's status and
    version are still the snapshot's, and (with a marker) no one applied it before;
    fields go to the job's reconciler hash in the same step; ttl: how long the marker keeps
    the action from being applied again."""
    keys = JobKeys(snap.job_id)
    args = [lease, snap.status, str(snap.version), str(max(1, int(ttl))) if marker else ""]
    for name, value in fields.items():
        args += [name, value]
    return bool(scripts["fenced"](keys=[RECONCILER_LEASE, keys.state, keys.weights,
                                        keys.acted(marker or "none"), keys.reconciler], args=args))
