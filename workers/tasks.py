"""The Celery tasks: thin wrappers that check arguments and call plain functions."""

from __future__ import annotations

import logging
import re
import time
import uuid

import redis
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from bpt.job import lifecycle
from bpt.errors import InvalidTask, ModelUnavailable
from bpt.broker import worker_registry
from bpt.broker.job_store import JobStore

from bpt.broker.weight_store import WeightStore

from . import flow, scheduler
from .app import CONTROL_QUEUE, FINISH_TASK, RANGE_TASK, SCHEDULE_TASK, TRAIN_TASK, countdown
from .runtime import WorkerRuntime
from .subnetwork import JobPaused, train_range, train_subset

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PAUSED_RETRY_SECONDS = 2
DECLINED_RETRY_SECONDS = 1  # a task this worker cannot build the model for goes back for another
OUTAGE_SECONDS = 300  # how long a task waits for Redis to come back before giving its message back
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OperationalError)


def register_tasks(app, runtime: WorkerRuntime) -> None:
    @app.task(name=TRAIN_TASK, bind=True, max_retries=None)  # paused jobs retry without limit
    def train_subset_task(self, job_id: str, epoch: int, wave: int, subset: int) -> dict:
        return _run(self, job_id, (epoch, wave, subset),
                    lambda delivery: train_subset(app, runtime, self.request.hostname, job_id, epoch, wave, subset,
                                                  delivery))

    @app.task(name=RANGE_TASK, bind=True, max_retries=None)
    def train_range_task(self, job_id: str, epoch: int, start: int, end: int) -> dict:
        return _run(self, job_id, (epoch, start, end),
                    lambda delivery: train_range(app, runtime, self.request.hostname, job_id, epoch, start, end,
                                                 delivery))

    @app.task(name=SCHEDULE_TASK, bind=True, max_retries=None)
    def schedule_task(self, job_id: str, chain: str | None = None) -> None:
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            log.error("refused schedule task for job id %r", job_id)
            return
        try:
            again = scheduler.schedule_round(app, runtime.client, job_id, runtime.settings.heartbeat_timeout,
                                             runtime.shards)
        except (redis.ConnectionError, redis.TimeoutError):
            again = True
        if again and scheduler.is_live_chain(runtime.client, job_id, chain):  # re-arm the next round
            schedule_task.apply_async(kwargs={"job_id": job_id, "chain": chain}, countdown=countdown(app, scheduler.TICK),
                                      queue=CONTROL_QUEUE)

    @app.task(name=FINISH_TASK, bind=True)
    def finish_task(self, job_id: str, reason: str = "") -> bool:
        """Finish a job that nobody finished (sent by the reconciler): its finisher went
        silent (the claim move decides whether this one may take over: lifecycle.TAKEOVER),
        or every wave is done and the task that completed the last died before claiming."""
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            log.error("refused finish task for job id %r", job_id)
            return False
        store = JobStore(runtime.client, job_id)
        status = store.status()
        weights = WeightStore(runtime.client, job_id, runtime.scripts, shards=runtime.shards)
        if status == lifecycle.FINISHING:
            return flow.finish_job(store, weights, store.spec(), takeover=str(reason)[:200] or "its finisher went silent")
        if status in lifecycle.ACCEPTS_PUSHES and flow.all_waves_done(store, store.spec()):
            return flow.finish_job(store, weights, store.spec(), reason="")
        return False

    def _decline(task, job_id: str, reason: str) -> dict:
        """This worker cannot build the job's model (a plug-in it lacks, another version):
        say so in the job, and give the task back for a worker that can. Once every live
        worker has declined, the job fails with the list (no task would ever train). A range
        task's range stays with the scheduler, which moves it off a declining worker."""
        worker = task.request.hostname
        store = JobStore(runtime.client, job_id)
        lacking, new = store.declined_by(worker, reason)
        if new:
            store.log("model-unavailable", worker=worker, reason=reason)
        live = set(worker_registry.live_workers(runtime.client, runtime.settings.heartbeat_timeout))
        if live <= set(lacking):
            why = "; ".join(f"{n}: {r}" for n, r in sorted(lacking.items()) if n in live)
            if store.fail(f"no live worker can build model {store.spec().model}: {why}"):
                store.log("failed", worker=worker, error=f"no live worker can build the model ({why})"[:500])
            return {"declined": reason}
        if task.name == RANGE_TASK:
            return {"declined": reason}
        raise task.retry(countdown=countdown(app, DECLINED_RETRY_SECONDS))

    def _run(task, job_id, numbers, work) -> dict:
        try:
            if not isinstance(job_id, str) or not JOB_ID.match(job_id):
                raise InvalidTask(f"invalid job id {job_id!r}")
            if not all(type(n) is int and n >= 0 for n in numbers):
                raise InvalidTask("epoch, wave, subset, start and end must be non-negative integers")
            delivery = uuid.uuid4().hex  # one per delivery: reruns through an outage are the same one
            return _through_outages(lambda: work(delivery))
        except JobPaused:
            # Not lost: Celery sends the same task again with a countdown, then acks this one.
            raise task.retry(countdown=countdown(app, PAUSED_RETRY_SECONDS))
        except ModelUnavailable as e:
            return _decline(task, job_id, str(e))
        except InvalidTask as e:
            # A forged or stale message: refuse it, and leave the job alone.
            log.error("refused task: %s", e)
            return {"refused": str(e)}
        except REDIS_DOWN as e:
            # Redis stayed away: give the message back (or, if that fails too, leave it
            # unacknowledged, so that the broker restores it after the visibility timeout).
            raise Reject(e, requeue=True)
        except Exception as e:
            # A job whose task fails for a reason other than a dying worker would wait
            # forever: fail the job loudly instead, and keep the reason. Unless the job has
            # ended meanwhile: then the error is its consequence (a cancel freed the data this
            # task was reading), and a done or cancelled job must stay so.
            store = JobStore(runtime.client, job_id)
            try:
                status = store.status()
            except REDIS_DOWN as down:  # cannot tell: give the message back rather than lose it
                raise Reject(down, requeue=True)
            if lifecycle.on_task_error(status) == "ignore":
                log.info("task of job %s stopped: the job is %s (%s)", job_id, status, e)
                return {"skipped": status}
            log.exception("task of job %s failed", job_id)
            if store.fail(f"{type(e).__name__}: {e}"):
                store.log("failed", worker=task.request.hostname, error=str(e)[:500])
            raise


def _through_outages(work, patience: float = OUTAGE_SECONDS):
    """Run work again, in this process, while Redis (weights and broker alike) is unreachable.

    Not task.retry(): that publishes a new message through the broker that is down, and
    Celery drops the task when the publish fails. Running again is safe: a push already
    applied is detected, and the job moves on from there (train_subset's duplicate path)."""
    deadline = time.monotonic() + patience
    pause = 0.2
    while True:
        try:
            return work()
        except REDIS_DOWN as e:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("redis unreachable (%s); trying again in %.1fs", e, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
