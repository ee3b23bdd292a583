"""What one worker process keeps between tasks: its Redis client and per-job caches.

Built lazily in the process that uses it (after Celery forks its pool), and keyed by
job so a worker can serve several jobs. The local model and its stepper (optimizer
state included) persist across a job's tasks: the momentum carries over from subset to subset, which is what
lets asynchronous training match single-process accuracy (see docs/design.md).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

import numpy as np

from bpt.model import devices
from bpt.train import inner
from bpt.model import registry as models
from bpt.errors import DataError, ModelUnavailable
from bpt.job.jobspec import JobSpec
from bpt.data.shared_data import SharedArrays
from bpt.settings import Settings
from bpt.broker import scripts
from bpt.broker.connection import connect
from bpt.broker.weight_shards import open_shards
from bpt.broker.job_store import JobStore

JOBS_CACHED = 2
DECLINE_MEMORY = 30.0  # seconds a process remembers that it cannot build a job's model
ROW_CACHE_BYTES = 512 * 2**20


class JobCache:
    """One job's spec, local model and optimizer, evaluation data and fetched rows."""

    def __init__(self, store: JobStore, settings: Settings):
        self.spec: JobSpec = store.spec()  # from_json checks classes and input size (jobspec.MAX_*)
        staged = int(store.state().get("staged_bytes", 0))
        if staged > settings.max_staged_mb * 2**20:  # this worker's limit, not the submitter's
            raise DataError(f"job {store.job_id} staged {staged / 2**20:.0f} MiB, over this worker's "
                            f"limit of {settings.max_staged_mb} MiB (BPT_MAX_STAGED_MB)")
        self.device = devices.resolve(settings.device)
        self.model = models.build_for(self.spec)  # ModelUnavailable: a plug-in this machine lacks
        if self.spec.layout and models.layout(self.model) != self.spec.layout:
            raise ModelUnavailable(f"model {self.spec.model} builds with other parameters here than at submit "
                                   f"(layout {models.layout(self.model)}, the job's {self.spec.layout})")
        self.inner = inner.resolve(settings.inner or self.spec.inner, self.spec.train.batch_size, settings.threads,
                                   self.spec.train.optimizer, self.device.type)
        self.model.to(self.device)
        self.stepper = inner.make_stepper(self.inner, self.model, self.spec.train, settings.threads,
                                          devices.autocast_dtype(self.device, settings.precision))
        self.eval_model = models.build_for(self.spec).to(self.device)
        self.source = data_source(store, self.spec)
        x_val, y_val = self.source.split("val")  # the same samples for every task
        self.x_score, self.y_score = x_val[:self.spec.score_samples], y_val[:self.spec.score_samples]
        self.x_guard, self.y_guard = x_val[:self.spec.guard_samples], y_val[:self.spec.guard_samples]
        self._test = None
        self._val = None
        self._rows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._row_bytes = 0

    def test_data(self, store: JobStore) -> tuple[np.ndarray, np.ndarray]:
        if self._test is None:
            self._test = self.source.split("test")
        return self._test

    def val_data(self, store: JobStore) -> tuple[np.ndarray, np.ndarray]:
        if self._val is None:
            self._val = self.source.split("val")
        return self._val

    def rows(self, store: JobStore, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        if (start, end) in self._rows:
            return self._rows[(start, end)]
        pair = self.source.rows(start, end)
        size = pair[0].nbytes + pair[1].nbytes
        if self._row_bytes + size <= ROW_CACHE_BYTES:
            self._rows[(start, end)] = pair
            self._row_bytes += size
        return pair


class StagedData:
    """A job's data staged in Redis: a task fetches its rows with GETRANGE."""

    def __init__(self, store: JobStore):
        self.store = store

    def rows(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.rows("x_train", start, end), self.store.rows("y_train", start, end)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.store.array(f"x_{name}"), self.store.array(f"y_{name}")


def data_source(store: JobStore, spec: JobSpec):
    """Where this job's samples come from: Redis, or an array directory read here
    (bpt.data.shared_data). A worker that cannot see the directory declines the job's tasks."""
    if not spec.data_path:
        return StagedData(store)
    if not os.path.isdir(spec.data_path):
        raise ModelUnavailable(f"cannot read the job's data directory {spec.data_path} on this machine "
                               "(it must be on a path every worker reaches)")
    arrays = SharedArrays(spec.data_path, spec.seed, spec.data_mean, spec.data_std)
    if arrays.n_train != spec.n_train or arrays.input_shape != tuple(spec.input_shape):
        raise DataError(f"{spec.data_path} changed since the job was submitted: {arrays.n_train} training rows of "
                        f"{arrays.input_shape}, the job has {spec.n_train} of {tuple(spec.input_shape)}")
    return arrays


class WorkerRuntime:
    def __init__(self, settings: Settings, slowdown: float = 1.0):
        self.settings = settings
        self.slowdown = slowdown
        self._pid = None
        self._client = None
        self._scripts = None
        self._shards = None
        self._jobs: OrderedDict[str, JobCache] = OrderedDict()
        self._declined: dict[str, tuple[float, ModelUnavailable]] = {}

    def _ensure_process(self) -> None:
        if self._pid != os.getpid():  # first use in this (forked) process
            self._client = connect(self.settings.redis_url, self.settings.connect_timeout, self.settings.socket_timeout)
            self._scripts = scripts.register(self._client)
            self._shards = open_shards(self.settings.weights_url, self.settings.connect_timeout,
                                       self.settings.socket_timeout, self.settings.weights_shards or None)
            self._jobs.clear()
            self._pid = os.getpid()

    @property
    def client(self):
        self._ensure_process()
        return self._client

    @property
    def shards(self):
        """Where the weights' shards live (--weights-url), or None: in the job's Redis."""
        self._ensure_process()
        return self._shards

    @property
    def scripts(self) -> dict:
        self._ensure_process()
        return self._scripts

    def job(self, store: JobStore) -> JobCache:
        """This process's cache of the job, built on first use. A job this machine cannot
        build the model for is remembered for DECLINE_MEMORY seconds: its retries decline at
        once instead of building the model again."""
        self._ensure_process()
        declined = self._declined.get(store.job_id)
        if declined and time.monotonic() - declined[0] < DECLINE_MEMORY:
            raise declined[1]
        if store.job_id not in self._jobs:
            try:
                self._jobs[store.job_id] = JobCache(store, self.settings)
            except ModelUnavailable as e:
                self._declined[store.job_id] = (time.monotonic(), e)
                raise
            while len(self._jobs) > JOBS_CACHED:
                self._jobs.popitem(last=False)
        self._jobs.move_to_end(store.job_id)
        return self._jobs[store.job_id]
