"""Faults injected into real processes: dead workers, a restarted Redis, a dead client.

Each test runs its own private Redis and workers, since it breaks them, once with Celery on
that Redis and once on RabbitMQ (the `broker` fixture)."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.workers.app import make_app
from bpt.workers.launcher import LocalWorkers
from bpt.workers.submit import submit

from benchmarks import digits_spread
from benchmarks.digits_spread import active_task, wait_done, wait_version

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def cluster(broker, slowdowns=(1.0, 1.0), visibility_timeout=600, appendonly=False):
    with PrivateRedis(appendonly=appendonly) as server:
        settings = Settings(redis_url=server.url, broker_url=broker, workers=2, visibility_timeout=visibility_timeout, poll_seconds=0.05)
        with LocalWorkers(settings, len(slowdowns), slowdowns=list(slowdowns)) as workers:
            app = make_app(settings)
            try:
                yield server, settings, app, workers
            finally:
                app.close()


def start_job(server, settings, app, job_id, epochs=15):
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=epochs, workers=2), job_id=job_id)
    return spec, submit(app, connect(server.url), settings, spec, data, weights)


def assert_each_subset_applied_once(spec, store, state):
    applied = store.client.hgetall(store.keys.applied)
    assert len(applied) == spec.total_tasks  # one outcome per (epoch, subset), no more, no fewer
    assert state["accepted"] + state["rejected"] == spec.total_tasks
    assert state["version"] == state["accepted"]


def test_kill_9_of_a_training_process_redelivers_its_subset(broker, tmp_path):
    """The job, its slowdowns and the kill are benchmarks.digits_spread's (KILL_JOB), which
    measures this pair's spread: 40 runs on both brokers, killed 0.9694 to 0.9889, killed
    minus undisturbed -0.0139 at worst (5 images; the bar allows 7)."""
    with cluster(broker, slowdowns=digits_spread.KILL_SLOWDOWNS) as (server, settings, app, workers):
        _, calm = digits_spread.submit_job(app, connect(server.url), settings, digits_spread.KILL_JOB, "calm")
        undisturbed = wait_done(calm)
        spec, store = digits_spread.submit_job(app, connect(server.url), settings, digits_spread.KILL_JOB, "killed")
        digits_spread.kill_a_training_process(app, store)  # a pool process running a task; its worker lives on
        state = wait_done(store)
        assert state["status"] == "done"
        assert_each_subset_applied_once(spec, store, state)
    scores = f"killed {state['test_accuracy']:.4f}, undisturbed {undisturbed['test_accuracy']:.4f}"
    print(scores)  # shown with -rP: the spread in a suite, beside digits_spread's
    # Asynchronous runs differ by about a point from run to run anyway; a kill must not cost more.
    assert state["test_accuracy"] >= undisturbed["test_accuracy"] - digits_spread.KILL_COST, scores
    assert state["test_accuracy"] >= digits_spread.BARS["killed"], scores


def test_kill_9_of_a_whole_worker_redelivers_after_the_visibility_timeout(broker):
    with cluster(broker, slowdowns=(6.0, 6.0), visibility_timeout=4) as (server, settings, app, workers):
        spec, store = start_job(server, settings, app, "orphaned", epochs=6)
        wait_version(store, 10)
        name, _ = active_task(app)
        victim = workers.procs[workers.names.index(name)]
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool process, as a dead machine
        state = wait_done(store, timeout=90)
        assert state["status"] == "done"
        assert_each_subset_applied_once(spec, store, state)


def test_redis_restart_mid_job_loses_no_acknowledged_push(broker):
    with cluster(broker, slowdowns=(4.0, 4.0), appendonly=True) as (server, settings, app, workers):
        spec, store = start_job(server, settings, app, "restarted")
        wait_version(store, 30)
        before = int(store.client.hget(store.keys.weights, "version"))
        # SIGTERM: Redis writes its AOF before it exits. Down for seconds, longer than the
        # publish retries of kombu: tasks must not be dropped (they once were, on a busy CI).
        server.restart(down_seconds=5)
        after = int(connect(server.url).hget(store.keys.weights, "version"))
        state = wait_done(store)
        assert after >= before
        assert state["status"] == "done"
        assert_each_subset_applied_once(spec, store, state)


def test_job_survives_its_client_and_wait_reattaches(broker, tmp_path):
    with cluster(broker) as (server, settings, app, workers):
        _survives_its_client(server.url, broker, tmp_path)


def _survives_its_client(redis_url, broker, tmp_path):
    flags = ["--broker-url", broker] if broker else []
    cli = subprocess.Popen([sys.executable, "-m", "bpt.cli", "train", "--redis-url", redis_url, "--epochs", "15", *flags],
                           stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    job = None
    for line in cli.stderr:
        match = re.match(r"job (\S+): ", line)
        if match:
            job = match.group(1)
            break
    cli.kill()
    cli.wait()
    assert job
    waited = subprocess.run([sys.executable, "-m", "bpt.cli", "wait", job, "--redis-url", redis_url, "--quiet",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert waited.returncode == 0, waited.stderr
    assert "done: test accuracy" in waited.stdout


def pool_processes(workers):
    import psutil

    return [c for p in workers.procs for c in psutil.Process(p.pid).children(recursive=True)]


def test_a_subset_that_kills_its_worker_every_time_fails_the_job_with_the_reason(broker):
    """Finding 5 of issue 15: with acks_late and reject_on_worker_lost, a task that kills its
    process was redelivered forever. Here every delivery of one subset has its process
    killed (kill -9, as the kernel's OOM killer does) while it trains."""
    with cluster(broker, slowdowns=(8.0,)) as (server, settings, app, workers):
        spec, store = start_job(server, settings, app, "poison", epochs=1)
        poison = spec.waves(0)[0][0]  # the first subset sent
        key = store.keys.deliveries(0, poison)
        killed, deadline = 0, time.monotonic() + 120
        while store.status() not in FINISHED and time.monotonic() < deadline:
            if store.client.scard(key) > killed and killed < settings.max_deliveries:
                for process in pool_processes(workers):
                    process.kill()
                killed += 1
            time.sleep(0.005)
        state = store.state()
    assert killed == settings.max_deliveries
    assert state["status"] == "failed"
    assert state["error"] == f"subset {poison} of epoch 0 killed its worker {settings.max_deliveries} times"


def test_cancel_mid_job_stops_its_weights_and_keeps_it_cancelled(broker, tmp_path):
    """Finding 1 of issue 15: a cancel deleted the staged data while tasks were reading it;
    they raised and marked the cancelled job failed, and in-flight pushes kept merging."""
    with cluster(broker, slowdowns=(3.0, 3.0)) as (server, settings, app, workers):
        spec, store = start_job(server, settings, app, "cancelled-midway", epochs=15)
        wait_version(store, 10)
        cancelled = subprocess.run([sys.executable, "-m", "bpt.cli", "cancel", store.job_id, "--redis-url",
                                    server.url], capture_output=True, text=True, timeout=60)
        assert cancelled.returncode == 0, cancelled.stderr
        version = int(store.client.hget(store.keys.weights, "version"))
        time.sleep(3)  # tasks that were training when it was cancelled push, and are refused
        state = store.state()
        events = [e["event"] for e in store.events()]
        after = int(store.client.hget(store.keys.weights, "version"))
    assert state["status"] == "cancelled" and "failed" not in events
    assert after == version  # nothing merged into it after the cancel


def test_a_slow_task_given_out_again_after_the_visibility_timeout_is_not_counted_as_poison():
    """Finding 8 of issue 26: a delivery stayed counted while it ran, and the Redis broker
    gives a task still running out again after its visibility timeout; the 4th delivery
    failed the job "killed its worker 3 times" though nothing died. Now an earlier delivery
    whose worker is alive and still has its process counts as running, not dead."""
    with cluster(None, slowdowns=(150.0,) * 4, visibility_timeout=1) as (server, settings, app, workers):
        spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1, workers=2, subset_size=400),
                                      job_id="slow")
        store = submit(app, connect(server.url), settings, spec, data, weights)
        state = wait_done(store, timeout=300)
        events = store.events()
    deliveries = [e for e in events if e["event"] in ("push-accepted", "push-duplicate")]
    assert state["status"] == "done", state.get("error")
    print(f"{len(deliveries)} pushes for {spec.n_subsets} subsets; compute "
          f"{[e.get('task_s') for e in events if e['event'] == 'push-accepted']}")
