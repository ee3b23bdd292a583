import numpy as np
import pytest

from bpt.data.datasets import DatasetSpec
from bpt.errors import DataError, UnknownJob
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import JobStore, list_jobs


@pytest.fixture(scope="module")
def prepared():
    return prepare(JobChoices(DatasetSpec("digits"), epochs=1), job_id="unused")


def keys_of(client, job_id):
    return list(client.scan_iter(match=f"bpt:job:\\{{{job_id}\\}}:*"))


def test_create_stages_everything_and_rows_come_back_by_range(client, job_id, prepared):
    spec, data, weights = prepared
    spec = type(spec)(**{**spec.__dict__, "job_id": job_id})
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    assert store.spec() == spec and store.status() == "queued" and job_id in list_jobs(client)
    np.testing.assert_array_equal(store.rows("x_train", 10, 20), data.x_train[10:20])
    np.testing.assert_array_equal(store.rows("y_train", 0, 5), data.y_train[:5])
    with pytest.raises(DataError, match="outside"):
        store.rows("x_train", 0, len(data.x_train) + 1)
    assert store.delete() > 0 and keys_of(client, job_id) == [] and job_id not in list_jobs(client)


def test_data_over_the_staging_limit_is_refused_and_nothing_written(client, job_id, prepared):
    spec, data, weights = prepared
    spec = type(spec)(**{**spec.__dict__, "job_id": job_id})
    with pytest.raises(DataError, match="over the 0 MiB"):
        JobStore.create(client, spec, data, weights, max_staged_bytes=1000)
    assert keys_of(client, job_id) == [] and job_id not in list_jobs(client)


def test_staging_again_for_a_resume_refuses_data_over_the_limit_and_keeps_what_is_staged(client, job_id, prepared):
    """A resume stages the data again (`bpt gc` frees it): through the same size check as a
    new job, and a refusal leaves the job's staged arrays as they were."""
    spec, data, weights = prepared
    spec = type(spec)(**{**spec.__dict__, "job_id": job_id})
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    before = client.get(store.keys.data("x_train"))
    with pytest.raises(DataError, match="over the 0 MiB"):
        store.stage_data(spec, data, max_staged_bytes=1000)
    assert client.get(store.keys.data("x_train")) == before
    client.delete(store.keys.data("x_train"))
    store.stage_data(spec, data, max_staged_bytes=2**30)
    np.testing.assert_array_equal(store.rows("x_train", 0, 5), data.x_train[:5])
    assert store.state()["staged_bytes"] > 0
    store.delete()


def test_unknown_job_is_a_clear_error(client):
    with pytest.raises(UnknownJob, match="no job 'nope'"):
        JobStore(client, "nope").spec()


def test_a_workers_skewed_clock_does_not_reach_the_jobs_timestamps(client, job_id, monkeypatch):
    """Issue 26, finding 13: events and evaluations were stamped with the writer's
    time.time() while metrics subtract Redis's `started`: a worker 10 minutes ahead put an
    evaluation "600 s after start". Every stamp is Redis's clock now."""
    import time as time_module

    from bpt.broker import clock
    from bpt.broker.job_store import JobStore

    store = JobStore(client, job_id)
    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 600)  # this process's clock, 10 min ahead
    store.log("probe")
    store.add_eval(1, 0.5, 0.5)
    redis_now = clock.now(client)
    assert abs(store.events()[-1]["time"] - redis_now) < 5
    assert abs(store.evals()[-1]["time"] - redis_now) < 5
    client.delete(store.keys.events, store.keys.evals)


def test_the_best_validation_version_and_the_evaluations_since_it(client, job_id, prepared):
    """Issue 28 (--patience, best.safetensors): only a strictly better accuracy is a new best,
    its weights are kept with its own version, and a late evaluation of a version older than
    the best changes nothing."""
    from bpt.broker import codec

    spec, data, weights = prepared
    spec = type(spec)(**{**spec.__dict__, "job_id": job_id})
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    marked = lambda v: {k: np.full_like(a, v) for k, a in weights.items()}  # noqa: E731
    try:
        assert store.observe_validation(0.5, 10, marked(10)) == (True, 0)
        assert store.observe_validation(0.5, 20, marked(20)) == (False, 1)  # equal is not better
        assert store.observe_validation(0.9, 5, marked(5)) == (False, 1)  # late, older than the best: ignored
        assert store.observe_validation(0.4, 30, marked(30)) == (False, 2)
        blob, version, val = store.best_weights()
        assert (version, val) == (10, 0.5) and all((a == 10).all() for a in codec.decode_weights(blob).values())
        assert store.observe_validation(0.7, 40, marked(40)) == (True, 0)
        assert store.best_weights()[1:] == (40, 0.7)
    finally:
        store.delete()
