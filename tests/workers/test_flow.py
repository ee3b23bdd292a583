"""Moving a greedy job on: releasing the next epoch before this one ends, and finding what a
stalled job still needs (against a real Redis server; the sent tasks go to its broker queue)."""

import dataclasses

from bpt.jobspec import JobSpec
from bpt.broker.job_store import JobStore
from bpt.workers import flow, watchdog


def make_spec(job_id, **kw):
    # 2000 samples in subsets of 250: eight subsets, one wave an epoch (agwu)
    return JobSpec(job_id=job_id, dataset="digits", model="digits-cnn", input_shape=(1, 8, 8), num_classes=10,
                   n_train=2000, epochs=3, subset_size=250, workers=2, **kw)


def open_job(client, job_id):
    store = JobStore(client, job_id)
    client.hset(store.keys.state, mapping={"status": "running", "epoch": 0})
    return make_spec(job_id), store


def finish(store, spec, epoch, subsets):
    store.client.sadd(store.keys.wave_done(epoch, 0), *subsets)
    return store.done_count(epoch, 0)


def released(store, epoch):
    return bool(store.client.exists(store.keys.wave_released(epoch, 0)))


def test_next_epoch_is_released_once_no_more_subsets_than_workers_are_left(app, client, job_id):
    spec, store = open_job(client, job_id)
    order = spec.waves(0)[0]
    flow.after_subset(app, store, None, spec, 0, 0, finish(store, spec, 0, order[:5]))
    assert not released(store, 0)  # three left, two workers
    flow.after_subset(app, store, None, spec, 0, 0, finish(store, spec, 0, order[5:6]))
    assert released(store, 0) and store.state()["epoch"] == 1


def test_an_epoch_waits_for_the_one_before_it_to_complete(app, client, job_id):
    spec, store = open_job(client, job_id)
    first, second = spec.waves(0)[0], spec.waves(1)[0]
    store.client.set(store.keys.wave_released(0, 0), 1)  # epoch 1 is out, epoch 0 has a straggler
    finish(store, spec, 0, first[:7])
    flow.after_subset(app, store, None, spec, 1, 0, finish(store, spec, 1, second[:7]))
    assert not released(store, 1)  # epoch 2 waits: epoch 0 is not complete
    assert watchdog.unfinished(store, spec) == (0, 0, first[7:])
    flow.after_subset(app, store, None, spec, 0, 0, finish(store, spec, 0, first[7:]))
    assert released(store, 1)  # the straggler's completion released it
    assert watchdog.unfinished(store, spec) == (1, 0, second[7:])


def test_small_epochs_are_released_ahead_by_a_quarter_at_most(app, client, job_id):
    spec, store = open_job(client, job_id)
    spec = dataclasses.replace(spec, workers=8)  # eight workers on eight subsets: two ahead, not eight
    order = spec.waves(0)[0]
    flow.after_subset(app, store, None, spec, 0, 0, finish(store, spec, 0, order[:5]))
    assert not released(store, 0)
    flow.after_subset(app, store, None, spec, 0, 0, finish(store, spec, 0, order[5:6]))
    assert released(store, 0)
