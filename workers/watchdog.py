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
from bpt.broker import worker_registry
from bpt.broker.job_store import JobStore, list_jobs
from bpt.broker.weight_store import WeightStore

from .app import TRAIN_QUEUE, TRAIN_TASK
from .flow import finish_job, next_wave, task_kwargs

STALL_MIN_SECONDS = 30.0  # never sooner than this ...
STALL_TASKS = 3.0  # ... nor sooner than this many times the slowest worker's predicted subset time


def watch_key(store: JobStore) -> str:
    return store.keys.watch


def resend_stalled_waves(app, client: redis.Redis, now: float) -> list[str]:
    """now: Redis's clock (broker/clock.py)."""
    resent = []
    for job_id in list_jobs(client):
        store = JobStore(client, job_id)
        status = store.status()
        if status == lifecycle.FINISHING:
            take_over_finish(store, now)
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
        limit = stall_limit(spec.subset_size, client, client.llen(TRAIN_QUEUE))
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


def stall_limit(subset_size: int, client: redis.Redis, queued: int = 0) -> float:
    """How long a job's version may stand still before its wave is sent again: a few of the
    slowest worker's subsets, plus the time the cluster needs to work through the `queued`
    messages ahead on the shared queue (other jobs' included). It used to wait for the queue
    to be empty, and so waited forever while another job kept it busy."""
    rates = [w["rate"] for w in worker_registry.workers(client).values() if w["rate"]]
    if not rates:
        return STALL_MIN_SECONDS * (1 + queued)
    return max(STALL_MIN_SECONDS, STALL_TASKS * subset_size / min(rates)) + queued * subset_size / sum(rates)


def take_over_finish(store: JobStore, now: float) -> bool:
    """A job left `finishing` by a finisher that died (its claim older than FINISH_PATIENCE):
    finish it here. The claim move itself refuses while the finisher may still be at work."""
    since = float(store.state().get("since", now))
    if now - since <= lifecycle.FINISH_PATIENCE:
        return False
    store.log("finish-taken-over", silent_seconds=round(now - since, 1))
    return finish_job(store, WeightStore(store.client, store.job_id, script_table={}), store.spec())


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
