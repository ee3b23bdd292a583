"""Whole jobs on real Celery worker processes and a real Redis server, with Celery's tasks on
that Redis and on RabbitMQ (the `broker` fixture): each its own Redis and workers."""

import dataclasses
import itertools
import time

import numpy as np

import pytest

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import FINISHED, JobStore
from bpt.broker.weight_store import WeightStore
from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.redis_server import PrivateRedis
from bpt.workers.app import TRAIN_QUEUE, TRAIN_TASK, make_app
from bpt.workers.launcher import LocalWorkers
from bpt.workers.flow import task_kwargs
from bpt.workers.submit import submit
from bpt.train import learning

from benchmarks import digits_spread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(broker):
    with PrivateRedis() as server:
        yield Settings(redis_url=server.url, broker_url=broker, workers=2, threads=1, poll_seconds=0.05)


@pytest.fixture(scope="module")
def workers(settings):
    with LocalWorkers(settings, 2) as local:
        yield local


@pytest.fixture(scope="module")
def app(settings):
    app = make_app(settings)
    yield app
    app.close()


@pytest.fixture
def client(settings):
    c = connect(settings.redis_url)
    yield c
    c.close()


def run_job(app, client, settings, job_id, timeout=120, **choices):
    spec, data, weights = prepare(dataclasses.replace(digits_spread.JOB, **choices), job_id=job_id)
    store = submit(app, client, settings, spec, data, weights)
    deadline = time.monotonic() + timeout
    while store.status() not in FINISHED:
        assert time.monotonic() < deadline, f"job stuck: {store.state()}"
        time.sleep(0.1)
    return spec, store


def test_digits_job_reaches_its_bar_with_consistent_counters(workers, app, client, settings, job_id):
    """The job is benchmarks.digits_spread's JOB, whose spread is measured there (100 runs
    outside full suites: 0.9721 to 0.9889); its bar sits one image under the 0.9694 at which
    four full suites ended it on RabbitMQ (docs/benchmarks.md, "The 2-worker digits tests'
    spread")."""
    spec, store = run_job(app, client, settings, job_id)
    state = store.state()
    assert state["status"] == "done", state
    print(f"test accuracy {state['test_accuracy']:.4f}, accepted {state['accepted']}, rejected {state['rejected']}, "
          f"duplicates {state.get('duplicates', 0)}, staleness {sorted(store.staleness_histogram().items())}, "
          f"samples {({w: s['samples'] for w, s in store.worker_stats().items()})}")  # -rP shows it: a suite's spread
    assert state["test_accuracy"] >= digits_spread.BARS["digits"], state["test_accuracy"]
    assert state["accepted"] + state["rejected"] == spec.total_tasks
    assert state["version"] == state["accepted"]  # one version per accepted push
    assert sum(store.staleness_histogram().values()) == state["accepted"]
    stats = store.worker_stats()
    assert set(stats) == set(workers.names)  # both workers trained
    assert sum(s["samples"] for s in stats.values()) == spec.epochs * spec.n_train
    assert not client.exists(store.keys.data("x_train"))  # staged data freed at the end


def test_a_job_still_climbing_when_its_epochs_run_out_says_so(workers, app, client, settings, job_id):
    """A slow recipe (lr 0.01 constant, 6 epochs: validation 0.17, 0.25, 0.42, 0.51, 0.51,
    0.72 in a trial run, a 30-point rise against the 5 that warn) ends while it still climbs:
    the job is done, with the still-learning warning naming its 2 training processes, in its
    state and its events; its final evaluation scored the validation split too."""
    spec, store = run_job(app, client, settings, job_id, epochs=6, lr=0.01, lr_schedule="constant")
    state = store.state()
    assert state["status"] == "done", state
    evals = store.evals()
    assert len([e for e in evals if "val_accuracy" in e]) >= learning.MIN_EVALUATIONS, evals
    assert evals[-1]["final"] and 0 <= evals[-1]["val_accuracy"] <= 1
    assert learning.climbed(learning.rise(evals)), evals
    assert "still learning" in state.get("warning", ""), state
    assert "fewer than 2 training processes" in state["warning"]
    assert any(e["event"] == "warning" and "still learning" in e["reason"] for e in store.events())


def test_sync_rule_makes_one_version_per_round(workers, app, client, settings, job_id):
    spec, store = run_job(app, client, settings, job_id, rule="sync", epochs=4)
    state = store.state()
    assert state["status"] == "done"
    assert state["version"] == sum(len(spec.waves(e)) for e in range(spec.epochs))
    assert state["test_accuracy"] >= 0.8
    # each epoch's last round is evaluated, the last epoch's by the job's finish (an evaluation
    # still scoring when the job finishes records nothing; on digits it takes milliseconds)
    ends = list(itertools.accumulate(len(spec.waves(e)) for e in range(spec.epochs)))
    assert sorted(e["version"] for e in store.events() if e["event"] == "evaluated") == ends[:-1]


def test_a_sync_job_stops_at_its_target_accuracy(workers, app, client, settings, job_id):
    spec, store = run_job(app, client, settings, job_id, rule="sync", epochs=8, target_accuracy=0.7)
    state = store.state()
    assert state["status"] == "done" and "reached the target 0.7" in state["reason"], state
    assert state["version"] < sum(len(spec.waves(e)) for e in range(spec.epochs))  # it stopped early
    stopping = store.evals()[-2]  # the last before the final evaluation: at an epoch's last round
    ends = set(itertools.accumulate(len(spec.waves(e)) for e in range(spec.epochs)))
    assert stopping["val_accuracy"] >= 0.7 and stopping["version"] in ends, stopping
    assert store.best_weights() is not None  # best.safetensors, as for the asynchronous rules
    assert state["test_accuracy"] >= 0.6


def test_a_redelivered_sync_completion_commits_and_evaluates_its_round(workers, app, client, settings, job_id):
    """The task completing a sync round staged its delta and died before the commit: its
    redelivered copy finds its subset applied, commits the round and, the version being due
    (--eval-every 1), evaluates it, without a train loss (the copy trained nothing)."""
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), workers=2, epochs=1, rule="sync", eval_every=1),
                                  job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    store.mark_running()  # its tasks had started: a queued job accepts no stage
    staging = WeightStore(client, job_id)
    first = spec.waves(0)[0]
    for subset in first:  # the round's pieces, all staged; nobody committed
        start, end = spec.subsets[subset]
        staged = staging.stage(delta={k: np.zeros_like(v) for k, v in staging.pull().weights.items()},
                               samples=end - start, accuracy=0.9, epoch=0, wave=0, subset=subset)
        assert staged.status == "accepted"
    app.send_task(TRAIN_TASK, kwargs=task_kwargs(job_id, 0, 0, first[-1]), queue=TRAIN_QUEUE)  # the redelivery
    deadline = time.monotonic() + 60
    while not any(e["event"] == "evaluated" for e in store.events()):  # logged after evals() has the entry
        assert time.monotonic() < deadline, store.state()
        time.sleep(0.05)
    first_eval = store.evals()[0]
    assert first_eval["version"] == 1 and "train_loss" not in first_eval and "val_accuracy" in first_eval
    events = store.events()
    assert [e["event"] for e in events][:2] == ["started", "round-merged"]  # the copy committed first
    assert any(e["event"] == "evaluated" and e["version"] == 1 for e in events)
    # none trained again: no push of the first round's pieces (the round it released may push
    # before the evaluation is logged: after_commit evaluates after the release)
    assert not [e for e in events if e["event"].startswith("push") and e["epoch"] == 0 and e["piece"] in first]
    assert store.state()["duplicates"] >= 1
    store.cancel()  # the next rounds were released: stop them
    while store.status() not in FINISHED:
        time.sleep(0.05)


def test_duplicate_delivery_of_a_task_changes_nothing(workers, app, client, settings, job_id):
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), workers=2, epochs=1), job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    subset = spec.waves(0)[0][0]
    for _ in range(2):  # Celery delivering the same subset twice, e.g. after a visibility timeout
        app.send_task(TRAIN_TASK, kwargs=task_kwargs(job_id, 0, 0, subset), queue=TRAIN_QUEUE)
    deadline = time.monotonic() + 60
    while store.state().get("accepted", 0) + store.state().get("duplicates", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    state = store.state()
    version = client.hget(store.keys.weights, "version")
    assert (state["accepted"], state["duplicates"], version) == (1, 1, b"1")
    store.delete()


def test_task_with_unexpected_fields_is_not_run(workers, app, client, settings, job_id):
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), workers=2, epochs=1), job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    app.send_task(TRAIN_TASK, args=[job_id, 0, 0, 0], kwargs={"module": "os"}, queue=TRAIN_QUEUE)
    app.send_task(TRAIN_TASK, args=[job_id, 0, 0, spec.n_subsets + 5], queue=TRAIN_QUEUE)
    time.sleep(2)
    assert client.hget(store.keys.weights, "version") == b"0"
    assert store.status() == "queued"  # refused, not failed
    store.delete()


def test_job_with_task_inner_layer_trains_and_workers_report_it(workers, app, client, settings, job_id):
    spec, store = run_job(app, client, settings, job_id, epochs=8, inner="tasks")
    assert store.state()["test_accuracy"] >= 0.8
    stats = store.worker_stats()
    assert {s["inner"] for s in stats.values()} == {"tasks/1"}  # strategy / threads of each worker


def test_an_idpa_job_is_scheduled_by_its_chain_of_rounds_without_stalls(workers, app, client, settings, job_id):
    """The scheduler re-arms itself with a countdown; on RabbitMQ a countdown under 1 s once
    failed at every tick and only the stall watchdog kept the job moving."""
    spec, store = run_job(app, client, settings, job_id, epochs=3, partition="idpa")
    state = store.state()
    assert state["status"] == "done", state
    events = [e["event"] for e in store.events()]
    assert "scheduler-revived" not in events, [e for e in store.events() if e["event"] == "scheduler-revived"]
    assert int(state["accepted"]) + int(state["rejected"]) >= 1
