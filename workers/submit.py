"""Submitting a job: stage everything in Redis in one transaction, then release wave 0."""

from __future__ import annotations

import numpy as np

from bpt.data.datasets import Dataset
from bpt.job.jobspec import JobSpec
from bpt.settings import Settings
from bpt.broker.job_store import JobStore
from bpt.broker.weight_shards import open_shards

from . import flow, scheduler


def submit(app, client, settings: Settings, spec: JobSpec, data: Dataset,
           initial_weights: dict[str, np.ndarray], shards=None) -> JobStore:
    """shards: a ShardStore for settings.weights_url (opened here, and closed, when not given)."""
    own = shards is None and settings.weights_url is not None
    if own:
        shards = open_shards(settings.weights_url, settings.connect_timeout, settings.socket_timeout,
                             settings.weights_shards or None)
    try:
        return _submit(app, client, settings, spec, data, initial_weights, shards)
    finally:
        if own:
            shards.close()


def _submit(app, client, settings, spec, data, initial_weights, shards) -> JobStore:
    store = JobStore.create(client, spec, data, initial_weights, settings.max_staged_mb * 2**20, shards)
    try:
        if spec.partition == "greedy":
            flow.release_wave(app, spec, 0, 0)
        else:
            scheduler.start(app, store)
    except BaseException:
        store.delete(shards)  # nothing half-written: a job whose tasks were never sent is removed
        raise
    store.set_fields(epoch=0)
    store.log("submitted", subsets=spec.n_subsets, epochs=spec.epochs, rule=spec.rule.kind, partition=spec.partition)
    return store
