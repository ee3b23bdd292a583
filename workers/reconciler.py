"""The reconciler: one loop per cluster that looks at every open job and sends what a lost
message, a dead task or a dead finisher left undone (the Kubernetes controller pattern).

Every worker runs a ReconcilerThread; the one whose lease (broker/recovery.py) is current
reconciles, the others wait to take over. A pass reads a snapshot of each open job, asks
bpt.job.reconcile.decide what it needs, and applies each action through fenced.lua first: an
action applies only while this worker still holds the lease it read with, the job's status
and version are what the snapshot saw, and no one applied the same action before. Then it
sends the Celery messages the action needs. A worker whose lease expired under it (a pause,
a partition) finds its actions refused. It replaced the greedy watchdog, the IDPA revive
and the finish takeover, which ran in the heartbeat thread and walked every job ever
indexed; the heartbeat thread now only beats.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import redis

from bpt.job import lifecycle
from bpt.job import reconcile
from bpt.broker import clock, recovery, scripts as lua, worker_registry
from bpt.broker.job_store import JobStore
from bpt.broker.keys import RECONCILER_SEEN
from bpt.broker.weight_store import WeightStore

from . import flow, queues
from .app import CONTROL_QUEUE, FINISH_TASK, TRAIN_QUEUE, TRAIN_TASK, countdown
from .scheduler import TICK, new_chain

log = logging.getLogger(__name__)
INTERVAL = 1.0  # seconds between passes
LEASE_TTL = 5.0  # a dead reconciler is replaced this long after its last pass, at most


def reconcile_pass(app, client: redis.Redis, lease: str, timeout: float, scripts: dict | None = None,
                   now: float | None = None, shards=None, holder: str | None = None,
                   lease_ttl: float = LEASE_TTL) -> list[tuple[str, object]]:
    """One pass over the open jobs, as the holder of `lease`; returns (job id, action) for
    each action applied. now: Redis's time (tests may look ahead); shards: a function giving
    the worker's ShardStore (--weights-url) for jobs with sharded weights; holder: renew the
    lease before each job (a pass outlasting the lease would have every later action refused)."""
    scripts = scripts or lua.register(client)
    now = clock.now(client) if now is None else now
    registry = worker_registry.workers(client)
    alive = {n: w for n, w in registry.items() if worker_registry.is_alive(w, now, timeout)}
    applied = []
    jobs = recovery.open_jobs(client)
    queued = queues.depth(app, TRAIN_QUEUE) if jobs else 0
    stall = reconcile.SCHEDULE_STALL_TICKS * countdown(app, TICK)
    for job_id in jobs:
        if holder is not None and recovery.hold_lease(client, scripts, holder, lease_ttl) != lease:
            return applied  # lost the lease: the new holder goes on
        try:
            applied += _reconcile_job(app, client, scripts, lease, job_id, now, alive, queued, stall, shards)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:  # one job's trouble (a malformed key, a send refused) must not stop the others
            log.warning("reconciling job %s failed", job_id, exc_info=True)
    _report_lost_workers(client, lease, jobs, registry, alive)
    return applied


def _reconcile_job(app, client, scripts, lease: str, job_id: str, now: float, alive: dict, queued: int,
                   stall: float, shards) -> list[tuple[str, object]]:
    store = JobStore(client, job_id)
    lacking = store.lacking()
    capable = {n: w for n, w in alive.items() if n not in lacking}
    snap = recovery.snapshot(client, job_id, now, sum(w["processes"] for w in capable.values()),
                             [w["rate"] for w in capable.values() if w["rate"]], queued, stall)
    if snap is None or snap.status in lifecycle.ENDED:
        recovery.mark_closed(client, job_id)
        return []
    applied = []
    for action in reconcile.decide(snap):
        done, snap = _apply(app, client, scripts, lease, store, snap, action, shards)
        if not done:
            break  # the rest of a job's actions follow from this one (a release after its commit)
        applied.append((job_id, action))
    return applied


def _apply(app, client, scripts, lease: str, store: JobStore, snap: reconcile.Snapshot, action, shards=None
           ) -> tuple[bool, reconcile.Snapshot]:
    """Claim the action in Redis (fenced.lua), then carry out what it needs. Returns whether
    it was applied, and the snapshot as the following actions must see it (a commit moves
    the version on). A marker's time to live is the action's retry period: an action whose
    follow-up failed (a finish task declined, a revived chain's message lost) is decided
    again then."""
    def claim(marker: str = "", ttl: float = recovery.ACTED_TTL, **fields) -> bool:
        return recovery.fenced(client, scripts, lease, snap, marker, ttl, **fields)

    if isinstance(action, reconcile.Watch):
        return claim("", version=action.version, at=snap.now), snap
    if isinstance(action, reconcile.Resend):
        # watched_at restarts with the resend: the next one is a new marker, a stall later
        if not claim(f"resend:{action.epoch}:{action.wave}:{snap.version}:{snap.watched_at}", at=snap.now):
            return False, snap
        spec = store.spec()
        before = lifecycle.previous_wave(flow.shape(spec), action.epoch, action.wave)
        if before is not None:  # a late copy of the wave before must not release this one again
            store.claim_release(*before)
        with app.producer_or_acquire() as producer:
            for subset in action.subsets:
                app.send_task(TRAIN_TASK, kwargs=flow.task_kwargs(store.job_id, action.epoch, action.wave, subset),
                              queue=TRAIN_QUEUE, producer=producer)
        store.log("resent", epoch=action.epoch, wave=action.wave, subsets=list(action.subsets), reason=action.reason)
        return True, snap
    if isinstance(action, reconcile.CommitRound):
        if not claim(""):  # no marker: commit_round is idempotent (its committed flag)
            return False, snap
        spec = store.spec()
        result = WeightStore(client, store.job_id, scripts, shards=shards() if shards else None).commit_round(
            rule=spec.rule, epoch=action.epoch, wave=action.wave)
        store.log("round-recovered", epoch=action.epoch, wave=action.wave, version=result.version,
                  status=result.status, reason="its round was complete but never committed")
        committed = bool(client.exists(store.keys.round_committed(action.epoch, action.wave)))
        return committed, dataclasses.replace(snap, version=int(client.hget(store.keys.weights, "version") or 0))
    if isinstance(action, reconcile.Release):
        if not claim(""):  # still the lease's holder, and the job as the commit left it
            return False, snap
        return flow.release_after(app, store, store.spec(), action.epoch, action.wave), snap
    if isinstance(action, reconcile.Finish):
        marker = f"takeover:{snap.since}" if action.takeover else f"finish:{snap.version}"
        if not claim(marker, lifecycle.FINISH_PATIENCE if action.takeover else snap.stall_limit):
            return False, snap
        app.send_task(FINISH_TASK, kwargs={"job_id": store.job_id, "reason": action.reason}, queue=CONTROL_QUEUE)
        store.log("finish-sent", reason=action.reason)
        return True, snap
    if isinstance(action, reconcile.Revive):
        if not claim(f"revive:{snap.schedule_at}", snap.schedule_stall + 1):
            return False, snap
        store.log("scheduler-revived", stalled_seconds=action.stalled_seconds)
        new_chain(app, store)
        return True, snap
    if isinstance(action, reconcile.Fail):
        if not claim("fail"):
            return False, snap
        if store.fail(action.reason):
            store.log("failed", error=action.reason)
        return True, snap
    raise TypeError(f"unknown reconciler action {action!r}")


def _report_lost_workers(client, lease: str, jobs: list[str], registry: dict, alive: dict) -> None:
    """A worker alive at the last pass and dead at this one: a worker-lost event (or
    worker-left, when it signed off) in each open job it took a task of (finished or still
    in hand), at once rather than when the job next moves (a death showed nothing for 30-40 s)."""
    before = {n.decode() for n in client.smembers(RECONCILER_SEEN)}
    lost = reconcile.lost_workers(before, set(alive))
    if lost and recovery.lease_holder(client) == lease:
        for job_id in jobs:
            store = JobStore(client, job_id)
            if store.status() not in lifecycle.OPEN:
                continue
            # took a task of it: one that died in its first task of the job has no :tasks yet
            # (the chaos soak's kills under load landed there and went unreported)
            ran = {m.decode() for m in client.smembers(store.keys.runners)}
            for name in lost:
                if name in ran or client.hexists(store.keys.worker_stats, f"{name}:tasks"):
                    entry = registry.get(name, {})
                    event = "worker-left" if entry.get("stopped") else "worker-lost"
                    store.log(event, worker=name, silent_s=round(clock.now(client) - entry.get("heartbeat", 0), 1))
                    if event == "worker-lost":  # `bpt train`'s and `bpt wait`'s progress bar says so
                        marked = str(store.state().get("lost_workers", "")).split()
                        store.set_fields(lost_workers=" ".join(dict.fromkeys(marked + [name])))
    if set(alive) != before and recovery.lease_holder(client) == lease:
        pipe = client.pipeline(transaction=True)
        pipe.delete(RECONCILER_SEEN)
        if alive:
            pipe.sadd(RECONCILER_SEEN, *alive)
        pipe.execute()


class ReconcilerThread(threading.Thread):
    """Every INTERVAL seconds: take or keep the lease; holding it, run a pass."""

    def __init__(self, app, client: redis.Redis, holder: str, timeout: float, interval: float = INTERVAL,
                 lease_ttl: float = LEASE_TTL, shards=None):
        super().__init__(daemon=True, name="bpt-reconciler")
        self.app, self.client, self.holder, self.timeout, self.shards = app, client, holder, timeout, shards
        self.interval, self.lease_ttl = interval, lease_ttl
        self.stopped = threading.Event()
        self.scripts = lua.register(client)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                lease = recovery.hold_lease(self.client, self.scripts, self.holder, self.lease_ttl)
                if lease:
                    reconcile_pass(self.app, self.client, lease, self.timeout, self.scripts, shards=self.shards,
                                   holder=self.holder, lease_ttl=self.lease_ttl)
            except redis.RedisError:
                pass  # Redis restarting: look again next time
            except Exception:  # e.g. the broker refusing a send: never let the loop die
                log.warning("reconciler pass failed", exc_info=True)
            self.stopped.wait(self.interval)

    def stop(self) -> None:
        """Stop, and give the lease back at once (another worker takes over without waiting
        for it to expire)."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=2 * self.interval)
        try:
            recovery.give_back_lease(self.client, self.holder)
        except redis.RedisError:
            pass
