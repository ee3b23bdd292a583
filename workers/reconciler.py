"""The reconciler: one loop per cluster that looks at every open job and sends what a lost
message, a dead task or a dead finisher left undone (the Kubernetes controller pattern).

Every worker runs a ReconcilerThread; the one whose lease (broker/recovery.py) is current
reconciles, the others wait to take over. A pass reads a snapshot of each open job, asks
bpt.reconcile.decide what it needs, and applies each action through fenced.lua first: an
action applies only while this worker still holds the lease it read with, the job's status
and version are what the snapshot saw, and no one applied the same action before. Then it
sends the Celery messages the action needs. A worker whose lease expired under it (a pause,
a partition) finds its actions refused. It replaced the greedy watchdog, the IDPA revive
and the finish takeover, which ran in the heartbeat thread and walked every job ever
indexed; the heartbeat thread now only beats.
"""

from __future__ import annotations

import logging
import threading

import redis

from bpt import lifecycle, reconcile
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
                   now: float | None = None) -> list[tuple[str, object]]:
    """One pass over the open jobs, as the holder of `lease`; returns (job id, action) for
    each action applied. now: Redis's time (tests may look ahead)."""
    scripts = scripts or lua.register(client)
    now = clock.now(client) if now is None else now
    registry = worker_registry.workers(client)
    alive = {n: w for n, w in registry.items() if worker_registry.is_alive(w, now, timeout)}
    applied = []
    jobs = recovery.open_jobs(client)
    queued = queues.depth(app, TRAIN_QUEUE) if jobs else 0
    stall = reconcile.SCHEDULE_STALL_TICKS * countdown(app, TICK)
    for job_id in jobs:
        store = JobStore(client, job_id)
        lacking = store.lacking()
        capable = {n: w for n, w in alive.items() if n not in lacking}
        snap = recovery.snapshot(client, job_id, now, sum(w["processes"] for w in capable.values()),
                                 [w["rate"] for w in capable.values() if w["rate"]], queued, stall)
        if snap is None or snap.status in lifecycle.ENDED:
            recovery.mark_closed(client, job_id)
            continue
        for action in reconcile.decide(snap):
            if _apply(app, client, scripts, lease, store, snap, action):
                applied.append((job_id, action))
    _report_lost_workers(client, lease, jobs, registry, alive)
    return applied


def _apply(app, client, scripts, lease: str, store: JobStore, snap: reconcile.Snapshot, action) -> bool:
    """Claim the action in Redis (fenced.lua), then carry out what it needs."""
    def claim(marker: str = "", **fields) -> bool:
        return recovery.fenced(client, scripts, lease, snap, marker, **fields)

    if isinstance(action, reconcile.Watch):
        return claim("", version=action.version, at=snap.now)
    if isinstance(action, reconcile.Resend):
        if not claim(f"resend:{action.epoch}:{action.wave}:{snap.version}:{snap.watched_at}", at=snap.now):
            return False
        spec = store.spec()
        before = lifecycle.previous_wave(flow.shape(spec), action.epoch, action.wave)
        if before is not None:  # a late copy of the wave before must not release this one again
            store.claim_release(*before)
        with app.producer_or_acquire() as producer:
            for subset in action.subsets:
                app.send_task(TRAIN_TASK, kwargs=flow.task_kwargs(store.job_id, action.epoch, action.wave, subset),
                              queue=TRAIN_QUEUE, producer=producer)
        store.log("resent", epoch=action.epoch, wave=action.wave, subsets=list(action.subsets), reason=action.reason)
        return True
    if isinstance(action, reconcile.CommitRound):
        if not claim(f"commit:{action.epoch}:{action.wave}:{snap.version}"):
            return False
        spec = store.spec()
        result = WeightStore(client, store.job_id, scripts).commit_round(rule=spec.rule, epoch=action.epoch,
                                                                        wave=action.wave)
        store.log("round-recovered", epoch=action.epoch, wave=action.wave, version=result.version,
                  status=result.status, reason="its round was complete but never committed")
        return True
    if isinstance(action, reconcile.Release):
        # The snapshot's version is the one before the commit just applied: no fence on it.
        return flow.release_after(app, store, store.spec(), action.epoch, action.wave)
    if isinstance(action, reconcile.Finish):
        if not action.takeover and not claim(f"finish:{snap.version}:{snap.watched_at}"):
            return False
        if action.takeover and not claim(f"takeover:{snap.since}"):
            return False
        app.send_task(FINISH_TASK, kwargs={"job_id": store.job_id, "reason": action.reason}, queue=CONTROL_QUEUE)
        store.log("finish-sent", reason=action.reason)
        return True
    if isinstance(action, reconcile.Revive):
        if not claim(f"revive:{snap.schedule_at}"):
            return False
        store.log("scheduler-revived", stalled_seconds=action.stalled_seconds)
        new_chain(app, store)
        return True
    if isinstance(action, reconcile.Fail):
        if not claim("fail"):
            return False
        if store.fail(action.reason):
            store.log("failed", error=action.reason)
        return True
    raise TypeError(f"unknown reconciler action {action!r}")


def _report_lost_workers(client, lease: str, jobs: list[str], registry: dict, alive: dict) -> None:
    """A worker alive at the last pass and dead at this one: a worker-lost event (or
    worker-left, when it signed off) in each open job it trained, at once rather than when
    the job next moves (a death showed nothing for 30-40 s)."""
    before = {n.decode() for n in client.smembers(RECONCILER_SEEN)}
    lost = reconcile.lost_workers(before, set(alive))
    if lost and recovery.lease_holder(client) == lease:
        for job_id in jobs:
            store = JobStore(client, job_id)
            if store.status() not in lifecycle.OPEN:
                continue
            trained = {k.decode() for k in client.hkeys(store.keys.worker_stats)}
            for name in lost:
                if f"{name}:tasks" in trained:
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
                 lease_ttl: float = LEASE_TTL):
        super().__init__(daemon=True, name="bpt-reconciler")
        self.app, self.client, self.holder, self.timeout = app, client, holder, timeout
        self.interval, self.lease_ttl = interval, lease_ttl
        self.stopped = threading.Event()
        self.scripts = lua.register(client)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                lease = recovery.hold_lease(self.client, self.scripts, self.holder, self.lease_ttl)
                if lease:
                    reconcile_pass(self.app, self.client, lease, self.timeout, self.scripts)
            except redis.RedisError:
                pass  # Redis restarting: look again next time
            except Exception:  # e.g. the broker refusing a send: never let the loop die
                log.warning("reconciler pass failed", exc_info=True)
            self.stopped.wait(self.interval)
