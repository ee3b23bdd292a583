"""A job's state in Redis: spec, staged data, status, counters, evaluations and events.

`create` writes a whole job in one MULTI transaction, after every check has passed, so a
refused or failed submission leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import redis

from bpt.train import guardrail
from bpt.job import lifecycle
from bpt.job import resume
from bpt.plan import sharding
from bpt.data.datasets import Dataset
from bpt.errors import ConfigError, DataError, UnknownJob
from bpt.job.jobspec import JobSpec

from . import clock, codec, recovery, scripts
from .keys import JOBS_INDEX, OPEN_JOBS, JobKeys, glob_escape
from .weight_store import WeightStore

ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
FINISHED = lifecycle.ENDED
MAX_EVENTS = 2000
LACKING_SECONDS = 120.0  # a worker's decline (it cannot build the model) counts this long after its last one
QUIET_REFUSALS = ("start", "claim")  # refused as a matter of course (every task tries them)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Moved:
    ok: bool  # the move was applied
    previous: str  # the status before it (the status now, when refused)


class JobStore:
    def __init__(self, client: redis.Redis, job_id: str):
        self.client = client
        self.job_id = job_id
        self.keys = JobKeys(job_id)
        self._transition = client.register_script(scripts.source("transition"))
        self._renew_claim = client.register_script(scripts.source("renew_claim"))
        self._observe_val = client.register_script(scripts.source("observe_val"))
        self._keep_best = client.register_script(scripts.source("keep_best"))

    # -- creation ----------------------------------------------------------------------
    @classmethod
    def create(cls, client: redis.Redis, spec: JobSpec, data: Dataset,
               weights: dict[str, np.ndarray], max_staged_bytes: int, shards=None) -> "JobStore":
        """shards: a ShardStore (--weights-url) to keep the weights' bytes on, else here."""
        blobs = _data_blobs(spec, data, max_staged_bytes)
        staged = sum(len(b) for b in blobs.values())
        store = cls(client, spec.job_id)
        now = clock.now(client)  # Redis's clock, as every stamp of the job's (issue 26, finding 13)
        pipe = client.pipeline(transaction=True)
        pipe.set(store.keys.spec, spec.to_json())
        for name, blob in blobs.items():
            pipe.set(store.keys.data(name), blob)
        WeightStore(client, spec.job_id, script_table={}, shards=shards).initialize(weights, pipe)
        pipe.hset(store.keys.state, mapping={
            "status": lifecycle.QUEUED, "since": now, "created": now, "accepted": 0, "rejected": 0, "invalid": 0, "duplicates": 0,
            "staged_bytes": staged})
        pipe.zadd(JOBS_INDEX, {spec.job_id: now})
        recovery.mark_open(pipe, spec.job_id)
        pipe.execute()
        return store

    def stage_data(self, spec: JobSpec, data: Dataset, max_staged_bytes: int) -> None:
        """Stage the job's arrays again (a resume: `bpt gc` frees them from an ended job)."""
        blobs = _data_blobs(spec, data, max_staged_bytes)
        if not blobs:
            return
        pipe = self.client.pipeline(transaction=True)
        for name, blob in blobs.items():
            pipe.set(self.keys.data(name), blob)
        pipe.hset(self.keys.state, "staged_bytes", sum(len(b) for b in blobs.values()))
        pipe.execute()

    # -- reading -----------------------------------------------------------------------
    def spec(self) -> JobSpec:
        raw = self.client.get(self.keys.spec)
        if raw is None:
            raise UnknownJob(f"no job {self.job_id!r} on this Redis server (see `bpt jobs`)")
        return JobSpec.from_json(raw)

    def exists(self) -> bool:
        return bool(self.client.exists(self.keys.spec))

    def state(self) -> dict:
        raw = self.client.hgetall(self.keys.state)
        if not raw:
            raise UnknownJob(f"no job {self.job_id!r} on this Redis server (see `bpt jobs`)")
        return {k.decode(): _number(v.decode()) for k, v in raw.items()}

    def status(self) -> str:
        raw = self.client.hget(self.keys.state, "status")
        return raw.decode() if raw else "unknown"

    def array(self, name: str) -> np.ndarray:
        blob = self.client.get(self.keys.data(name))
        if blob is None:
            raise UnknownJob(f"job {self.job_id!r} has no staged {name}")
        return codec.decode_array(blob)

    def rows(self, name: str, start: int, end: int) -> np.ndarray:
        """Rows [start, end) of a staged array, fetched with GETRANGE (not the whole array)."""
        key = self.keys.data(name)
        dtype, shape, offset = codec.array_header(self.client.getrange(key, 0, 255))
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        if not 0 <= start < end <= shape[0]:
            raise DataError(f"rows {start}:{end} are outside {name} of {shape[0]} rows")
        raw = self.client.getrange(key, offset + start * row_bytes, offset + end * row_bytes - 1)
        return np.frombuffer(raw, dtype=dtype).reshape((end - start,) + tuple(shape[1:]))

    def evals(self) -> list[dict]:
        return [json.loads(e) for e in self.client.lrange(self.keys.evals, 0, -1)]

    def events(self, last: int = MAX_EVENTS) -> list[dict]:
        return [json.loads(e) for e in self.client.lrange(self.keys.events, -last, -1)]

    def staleness_histogram(self) -> dict[int, int]:
        raw = self.client.hgetall(self.keys.staleness)
        return dict(sorted((int(k), int(v)) for k, v in raw.items()))

    def worker_stats(self) -> dict[str, dict]:
        stats: dict[str, dict] = {}
        for key, value in self.client.hgetall(self.keys.worker_stats).items():
            worker, _, field = key.decode().rpartition(":")
            stats.setdefault(worker, {})[field] = value.decode() if field in ("inner", "device") else float(value)
        for s in stats.values():
            s["samples_per_second"] = s.get("samples", 0) / s["seconds"] if s.get("seconds") else 0.0
            s["mean_staleness"] = s["staleness"] / s["accepted"] if s.get("accepted") else None
        return stats

    # -- writing -----------------------------------------------------------------------
    # -- the job's life (bpt.job.lifecycle), each move one compare-and-set --------------------
    def move(self, move: str, stamp: str = "", **fields) -> Moved:
        """Apply one move of the state machine if the job's status allows it, atomically
        (transition.lua); stamp names a field set to Redis's time of the move. A refused
        move changes nothing and is logged as an event (except the routine ones)."""
        takeover = lifecycle.TAKEOVER.get(move)
        args = [lifecycle.target(move), " ".join(lifecycle.allowed_from(move)),
                "" if takeover is None else repr(takeover), stamp]
        for name, value in fields.items():
            args += [name, value]
        outcome, previous, _ = self._transition(keys=[self.keys.state], args=args)
        moved = Moved(outcome.decode() == "ok", previous.decode())
        if not moved.ok and move not in QUIET_REFUSALS and moved.previous != "unknown":
            log.info("job %s: %s refused, it is %s", self.job_id, move, moved.previous)
            self.log("transition-refused", move=move, status=moved.previous)
        return moved

    def mark_running(self) -> None:
        """The first task to train moves a queued job to running."""
        if self.move("start", stamp="started").ok:
            self.log("started")

    def claim_finish(self, token: str = "", reason: str = "") -> bool:
        """True for exactly one caller: the one that evaluates and completes the job. token:
        the finisher's, with which it renews the claim while it evaluates (renew_claim).
        reason: why the job ends, kept with the claim (finish_reason) so that a finisher
        that takes over (its own reason empty) ends the job for the same reason, not as if
        it ran all its epochs."""
        return self.move("claim", finisher=token, **({"finish_reason": reason} if reason else {})).ok

    def renew_claim(self, token: str) -> bool:
        """The finisher holding the claim with `token` is still at work: its claim's age
        starts again, so that nobody takes the job over (issue 26, finding 12)."""
        return bool(self._renew_claim(keys=[self.keys.state], args=[token]))

    def complete(self, **results) -> bool:
        return self.move("complete", stamp="finished", **results).ok

    def fail(self, error: str) -> bool:
        return self.move("fail", stamp="finished", error=error[:500]).ok

    def cancel(self, reason: str = "cancelled by user") -> bool:
        return self.move("cancel", stamp="finished", error=reason).ok

    def set_fields(self, **fields) -> None:
        self.client.hset(self.keys.state, mapping=fields)

    def record_work(self, worker: str, samples: int, seconds: float, inner: str = "", device: str = "",
                    staleness: int | None = None) -> None:
        """One task's work; staleness: its push's, when accepted (a worker's mean staleness
        is what `bpt status --watch` shows beside its throughput)."""
        pipe = self.client.pipeline(transaction=False)
        if staleness is not None:
            pipe.hincrbyfloat(self.keys.worker_stats, f"{worker}:staleness", staleness)
            pipe.hincrbyfloat(self.keys.worker_stats, f"{worker}:accepted", 1)
        pipe.hset(self.keys.worker_stats, f"{worker}:inner", inner)
        pipe.hset(self.keys.worker_stats, f"{worker}:device", device)
        pipe.hincrbyfloat(self.keys.worker_stats, f"{worker}:samples", samples)
        pipe.hincrbyfloat(self.keys.worker_stats, f"{worker}:seconds", seconds)
        pipe.hincrbyfloat(self.keys.worker_stats, f"{worker}:tasks", 1)
        pipe.execute()

    def add_gradient_stats(self, stats, epoch: int) -> None:
        """Add one task's gradient statistics (a noise_scale.GradStats) to the job's sums, over
        the job and over its epoch (the noise scale grows as training goes on: the job's
        estimate is its latest epochs', noise_scale.latest_sums)."""
        pipe = self.client.pipeline(transaction=True)
        for field, value in (("pushes", 1), ("small", stats.small), ("big", stats.big), ("batch", stats.batch),
                             ("big_batch", stats.batch * stats.batches)):
            pipe.hincrbyfloat(self.keys.gradients, field, value)
            pipe.hincrbyfloat(self.keys.gradients, f"{field}:{epoch}", value)
        pipe.execute()

    def gradient_sums(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.client.hgetall(self.keys.gradients).items()}

    def add_eval(self, version: int, loss: float, accuracy: float, **extra) -> None:
        """One evaluation of the global weights on the test split; extra: epoch, samples
        trained so far, the pushing task's train loss, top-k and validation accuracy."""
        entry = {"version": version, "time": clock.now(self.client), "loss": loss, "accuracy": accuracy, **extra}
        self.client.rpush(self.keys.evals, json.dumps(entry))

    def declined_by(self, worker: str, reason: str) -> tuple[dict[str, str], bool]:
        """Record (again) that a worker cannot build the job's model. Returns the workers that
        declined within the last LACKING_SECONDS, with their reasons, and whether this worker
        is new among them (so that the event is logged once, not at every retry)."""
        fresh_before = set(self.lacking())
        self.client.hset(self.keys.lacking, worker, json.dumps({"reason": reason[:300], "at": clock.now(self.client)}))
        return self.lacking(), worker not in fresh_before

    def rates(self) -> dict[str, float]:
        """Per worker, the samples/s of one of its training processes in this job (EWMA)."""
        return {k.decode(): float(v) for k, v in self.client.hgetall(self.keys.rates).items()}

    def lacking(self) -> dict[str, str]:
        """Workers that declined this job's tasks lately. An entry older than LACKING_SECONDS
        no longer counts: a worker whose plug-in was installed, or whose mount came back,
        gets work again."""
        now = clock.now(self.client)
        out = {}
        for k, v in self.client.hgetall(self.keys.lacking).items():
            entry = json.loads(v)
            if now - entry["at"] <= LACKING_SECONDS:
                out[k.decode()] = entry["reason"]
        return out

    def samples_trained(self) -> int:
        """Samples trained by all workers so far (record_work's counters)."""
        raw = self.client.hgetall(self.keys.worker_stats)
        return int(sum(float(v) for k, v in raw.items() if k.endswith(b":samples")))

    def log(self, event: str, **fields) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.keys.events, json.dumps({"time": clock.now(self.client), "event": event, **fields}))
        pipe.ltrim(self.keys.events, -MAX_EVENTS, -1)
        pipe.execute()

    # -- the accuracy guardrail (bpt.train.guardrail) -------------------------------------------
    def guard_level(self) -> int:
        return int(self.client.hget(self.keys.guard, "level") or 0)

    def observe_accuracy(self, accuracy: float, margin: float, samples: int
                         ) -> tuple[guardrail.GuardState, str | None]:
        """Feed one validation accuracy of the global model (on `samples` images) to the
        guardrail, atomically (WATCH/MULTI on its own hash: concurrent evaluators cannot both
        tighten). Returns the new state and "tightened", "relaxed" or None."""
        key = self.keys.guard
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    raw = {k.decode(): v.decode() for k, v in pipe.hgetall(key).items()}
                    state = guardrail.GuardState(
                        float(raw["best"]) if raw.get("best") else None, int(raw.get("level", 0)),
                        int(raw.get("strikes", 0)), float(raw["peak"]) if raw.get("peak") else None,
                        int(raw.get("recoveries", 0)))
                    new, event = guardrail.observe(state, accuracy, margin, samples)
                    pipe.multi()
                    pipe.hset(key, mapping={"best": "" if new.best is None else new.best, "level": new.level,
                                            "strikes": new.strikes, "peak": "" if new.peak is None else new.peak,
                                            "recoveries": new.recoveries})
                    pipe.execute()
                    return new, event
                except redis.WatchError:
                    continue

    def count_delivery(self, epoch: int, piece, token: str, worker: str = "", pid: int = 0) -> dict[str, dict]:
        """Count one delivery (token) of the task training `piece` of `epoch`, run by process
        `pid` of `worker`; returns every delivery counted (token -> worker, pid, arrived by
        Redis's clock). Celery redelivers a task whose process died with the same task id,
        so each delivery brings its own token. Adds `worker` to the job's runners (whom the
        reconciler reports lost if it dies while the job is open)."""
        key, who = self.keys.deliveries(epoch, piece), self.keys.delivery_runners(epoch, piece)
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(key, token)
        pipe.hset(who, token, json.dumps({"worker": worker, "pid": pid, "arrived": clock.now(self.client)}))
        pipe.smembers(key)
        pipe.hgetall(who)
        if worker:  # the reconciler reports a dead worker lost in every job it had a task of
            pipe.sadd(self.keys.runners, worker)
        members, by_token = pipe.execute()[2:4]
        by_token = {k.decode(): json.loads(v) for k, v in by_token.items()}
        return {m.decode(): by_token.get(m.decode(), {"worker": "", "pid": 0, "arrived": 0.0}) for m in members}

    def give_back_delivery(self, epoch: int, piece, token: str) -> None:
        """Uncount a delivery that ended cleanly (it did not kill its process)."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(self.keys.deliveries(epoch, piece), token)
            pipe.hdel(self.keys.delivery_runners(epoch, piece), token)
            pipe.execute()
        except redis.RedisError:  # Redis down: the count stays one too high, under the limit
            pass

    def forget_deliveries(self, epoch: int, piece) -> None:
        """The piece has its outcome: its delivery count is not needed again (a later
        delivery finds it applied first), so the keys stay as many as the tasks in flight."""
        self.client.delete(self.keys.deliveries(epoch, piece), self.keys.delivery_runners(epoch, piece))

    def observe_validation(self, accuracy: float, version: int, weights, keep: bool = True) -> tuple[bool, int]:
        """One validation accuracy of the global model (version, its weights as arrays): keeps
        the best version's weights (best.safetensors; not with keep False: a job whose weights
        are sharded elsewhere for their size) and counts evaluations since it, for --patience.
        Returns (is it the best so far, evaluations since the best)."""
        improved, since = self._observe_val(keys=[self.keys.state], args=[repr(float(accuracy)), version])
        if improved and keep:
            self._keep_best(keys=[self.keys.state, self.keys.best_blob],
                            args=[version, repr(float(accuracy)), codec.encode_weights(weights)])
        return bool(improved), int(since)

    def best_weights(self) -> tuple[bytes, int, float] | None:
        """(blob, version, validation accuracy) of the best-validation version, if any."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(self.keys.best_blob)
        pipe.hmget(self.keys.state, "best_blob_version", "best_blob_val")
        blob, (version, val) = pipe.execute()
        return None if blob is None or version is None else (blob, int(version), float(val))

    def count_duplicate(self) -> None:
        """A delivery of a piece already applied (a redelivery after its push landed): counted
        with the duplicate pushes the push script refuses."""
        self.client.hincrby(self.keys.state, "duplicates", 1)

    def claim_release(self, epoch: int, wave: int) -> bool:
        """True for exactly one caller: the one that releases the wave after (epoch, wave)."""
        return bool(self.client.set(self.keys.wave_released(epoch, wave), 1, nx=True))

    def done_count(self, epoch: int, wave: int) -> int:
        return int(self.client.scard(self.keys.wave_done(epoch, wave)))

    def drop_staged_data(self) -> None:
        """Free the staged arrays once a job has ended: they are the bulk of its memory."""
        self.client.delete(*(self.keys.data(name) for name in ARRAYS))

    def drop_bookkeeping(self) -> int:
        """Remove per-wave sets and flags once a job has ended; counters and results stay."""
        patterns = self.keys.bookkeeping_patterns()
        keys = [k for p in patterns for k in self.client.scan_iter(match=_escape(p), count=1000)]
        if keys:
            self.client.delete(*keys)
        return len(keys)

    def delete(self, shards=None) -> int:
        """Every key of the job (and its weight shards on `shards`, when it has some)."""
        if shards is not None:
            shards.delete_job(self.job_id)
        elif sharding.is_manifest(self.client.get(self.keys.weights_blob) or b""):
            raise ConfigError(f"job {self.job_id} keeps its weights sharded on a Redis Cluster: give this command "
                              "that cluster's --weights-url (BPT_WEIGHTS_URL) to delete them too")
        keys = list(self.client.scan_iter(match=_escape(self.keys.pattern()), count=1000))
        pipe = self.client.pipeline(transaction=True)
        if keys:
            pipe.delete(*keys)
        pipe.zrem(JOBS_INDEX, self.job_id)
        pipe.srem(OPEN_JOBS, self.job_id)
        pipe.execute()
        return len(keys)


def _escape(pattern: str) -> str:
    """A job id could hold glob characters; escape all but the trailing '*' of a pattern."""
    return glob_escape(pattern[:-1]) + pattern[-1]


def collect_garbage(client: redis.Redis, delete_finished: bool = False, shards=None) -> dict:
    """Free what ended jobs left behind: staged data of ended jobs and the wave bookkeeping of
    done ones (failed and cancelled jobs keep theirs, and their weights, for `bpt train
    --resume` until they are deleted),
    every key of a job missing from the index, and (optionally) finished jobs entirely, with
    their weight shards on `shards` (--weights-url)."""
    indexed = set(list_jobs(client))
    report = {"orphan_keys": 0, "finished_jobs_cleaned": 0, "jobs_deleted": 0}
    delete_orphan = client.register_script(scripts.source("delete_orphan"))
    for key in client.scan_iter(match=JobKeys("*").pattern(), count=1000):
        job_id = key.decode().split("{", 1)[1].split("}", 1)[0]
        if job_id not in indexed:  # by this copy of the index; the script checks the index as it is now
            report["orphan_keys"] += int(delete_orphan(keys=[JOBS_INDEX, key], args=[job_id]))
    for job_id in indexed:
        store = JobStore(client, job_id)
        if store.status() not in FINISHED and store.status() != "unknown":
            continue
        if delete_finished:
            store.delete(shards)
            report["jobs_deleted"] += 1
        else:
            store.drop_staged_data()
            if store.status() not in resume.RESUMABLE:  # a failed or cancelled job keeps what --resume needs
                store.drop_bookkeeping()
            report["finished_jobs_cleaned"] += 1
    return report


def list_jobs(client: redis.Redis) -> list[str]:
    return [j.decode() for j in client.zrange(JOBS_INDEX, 0, -1)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _data_blobs(spec: JobSpec, data: Dataset, max_staged_bytes: int) -> dict[str, bytes]:
    """The arrays bpt stages in Redis for a job, encoded; none for an array directory (the
    workers read it themselves). Refused in one line when over max_staged_bytes."""
    blobs = {} if spec.data_path else {name: codec.encode_array(getattr(data, name)) for name in ARRAYS}
    staged = sum(len(b) for b in blobs.values())
    if staged > max_staged_bytes:
        raise DataError(
            f"data set is {staged / 2**20:.0f} MiB, over the {max_staged_bytes / 2**20:.0f} MiB that bpt "
            "stages in Redis; raise BPT_MAX_STAGED_MB (Redis needs that much free memory) or use less data")
    return blobs
