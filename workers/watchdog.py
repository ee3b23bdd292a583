"""The watchdog for waves of subset tasks (greedy partition): sends a stalled wave's
unfinished subsets again.

A subset task can be lost without any worker dying: when a worker's broker connection
drops (Redis restarted, a network cut), Celery forgets the tasks it had received and not
yet started, and Redis gives them back only after the visibility timeout (600 s by
default). A job whose version has not moved for a stall period, with nothing left in the
train queue, gets its current wave's unfinished subsets sent again. Sending one twice is
safe: the second push is a counted duplicate. Called from every worker's heartbeat thread;
a short NX lock keeps it to one worker at a time. (IDPA jobs have the scheduler task,
which moves a range held far past its predicted time.)
"""

from __future__ import annotations

import redis

from bpt import lifecycle
from bpt.settings import DEFAULT_HEARTBEAT_TIMEOUT
from bpt.broker import clock, worker_registry
from bpt.broker.job_store import JobStore, list_jobs

from .app import CONTROL_QUEUE, FINISH_TASK, TRAIN_QUEUE, TRAIN_TASK
from . import queues
from .flow import next_wave, task_kwargs

STALL_MIN_SECONDS = 30.0  # never sooner than this ...
STALL_TASKS = 3.0  # ... nor sooner than this many times the slowest worker's predicted subset time
MAX_BACKLOG_WAIT = 300.0  # the wait for messages queued ahead is at most this long


def watch_key(store: JobStore) -> str:
    return store.keys.watch


def resend_stalled_waves(app, client: redis.Redis, now: float,
                         timeout: float = DEFAULT_HEARTBEAT_TIMEOUT) -> list[str]:
    """now: Redis's clock (broker/clock.py); timeout: the heartbeat timeout."""
    resent = []
    for job_id in list_jobs(client):
        store = JobStore(client, job_id)
        status = store.status()
        if status == lifecycle.FINISHING:
            take_over_finish(app, store, now)
            continue
        if status == lifecycle.PAUSED:  # a pause is not a stall: the clock starts again at resume
            client.hset(watch_key(store), "at", now)
            continue
        if status != lifecycle.RUNNING:
            continue
        spec = store.spec()
        if spec.partition != "greedy":
            continue
        version = client.hget(store.keys.weights, "version")
        seen = {k.decode(): v.decode() for k, v in client.hgetall(watch_key(store)).items()}
        if seen.get("version") != (version or b"").decode():
            client.hset(watch_key(store), mapping={"version": (version or b"").decode(), "at": now})
            continue
        limit = stall_limit(spec.subset_size, client, queues.depth(app, TRAIN_QUEUE), now, timeout)
        if now - float(seen["at"]) < limit:
            continue
        if not client.set(store.keys.resend_lock, 1, nx=True, ex=max(1, int(limit))):
            continue
        epoch, wave, missing = unfinished(store, spec)
        if missing:
            with app.producer_or_acquire() as producer:
                for subset in missing:
                    app.send_task(TRAIN_TASK, kwargs=task_kwargs(job_id, epoch, wave, subset), queue=TRAIN_QUEUE,
                                  producer=producer)
            store.log("resent", epoch=epoch, wave=wave, subsets=missing,
                      reason=f"version {version.decode() if version else '?'} unchanged for {now - float(seen['at']):.0f}s")
            resent.append(job_id)
        client.hset(watch_key(store), "at", now)
    return resent


def stall_limit(subset_size: int, client: redis.Redis, queued: int = 0, now: float | None = None,
                timeout: float = DEFAULT_HEARTBEAT_TIMEOUT) -> float:
    """How long a job's version may stand still before its wave is sent again: a few of the
    slowest live worker's subsets, plus the time the live workers need to work through the
    `queued` messages ahead on the shared queue (other jobs' included), at most
    MAX_BACKLOG_WAIT. It used to wait for the queue to be empty, and so waited forever while
    another job kept it busy."""
    now = clock.now(client) if now is None else now
    rates = [w["rate"] for w in worker_registry.workers(client).values()
             if w["rate"] and worker_registry.is_alive(w, now, timeout)]
    base = max(STALL_MIN_SECONDS, STALL_TASKS * subset_size / min(rates)) if rates else STALL_MIN_SECONDS
    backlog = queued * subset_size / sum(rates) if rates else float(queued)
    return base + min(backlog, MAX_BACKLOG_WAIT)


def take_over_finish(app, store: JobStore, now: float) -> bool:
    """A job left `finishing` by a finisher that died (its claim older than FINISH_PATIENCE,
    by Redis's clock): send a finish task to the control queue, once (a lock as long as the
    patience). Not here: an evaluation in the heartbeat thread would hold up the beats."""
    since = float(store.state().get("since", now))
    if not lifecycle.is_legal(lifecycle.FINISHING, "claim", since, now):
        return False
    if not store.client.set(store.keys.finish_lock, 1, nx=True, ex=int(lifecycle.FINISH_PATIENCE)):
        return False
    app.send_task(FINISH_TASK, kwargs={"job_id": store.job_id,
                                       "reason": f"its finisher was silent for {now - since:.0f}s"},
                  queue=CONTROL_QUEUE)
    return True


def unfinished(store: JobStore, spec) -> tuple[int, int, list[int]]:
    """(epoch, wave, subsets of that wave not done) for the earliest wave not complete, from
    the epoch before the job's current one (the next epoch is released before an epoch ends)."""
    at = (max(0, int(store.state().get("epoch", 0)) - 1), 0)
    while at is not None:
        epoch, wave = at
        done = {int(m) for m in store.client.smembers(store.keys.wave_done(epoch, wave))}
        missing = [s for s in spec.waves(epoch)[wave] if s not in done]
        if missing:
            return epoch, wave, missing
        at = next_wave(spec, epoch, wave)
    return spec.epochs - 1, len(spec.waves(spec.epochs - 1)) - 1, []
