"""The scheduler task with real workers: IDPA ranges, and a dead worker's ranges moved."""

import json
import os
import signal
import time

import pytest

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.broker.worker_registry import workers as registered
from bpt.workers.app import make_app
from bpt.workers.launcher import LocalWorkers
from bpt.workers.scheduler import state_key
from bpt.workers.submit import submit

pytestmark = pytest.mark.slow


def epoch_pieces(client, store, epoch):
    """The ranges with an outcome (accepted or rejected) in this epoch: "epoch:start:end" fields."""
    fields = (f.decode().split(":") for f in client.hkeys(store.keys.applied))
    return sorted((int(s), int(e)) for ep, s, e in fields if int(ep) == epoch)


def holds(client, store, worker) -> bool:
    """Whether the scheduler has ranges outstanding on this worker."""
    state = json.loads(client.get(state_key(store)))
    return any(held["worker"] == worker for held in state["outstanding"].values())


def test_killing_one_of_three_workers_moves_its_ranges_and_trains_each_sample_once():
    with PrivateRedis() as server:
        settings = Settings(redis_url=server.url, workers=3, heartbeat_timeout=4.0, poll_seconds=0.05)
        with LocalWorkers(settings, 3, slowdowns=[2.0, 2.0, 2.0]) as workers:
            app = make_app(settings)
            client = connect(server.url)
            spec, data, weights = prepare(JobChoices(DatasetSpec("digits-aug", samples=8000), epochs=5, workers=3,
                                                     partition="idpa"), job_id="killed-idpa")
            store = submit(app, client, settings, spec, data, weights)
            while int(client.hget(store.keys.weights, "version") or 0) < 8 or not holds(client, store, workers.names[2]):
                time.sleep(0.02)
            victim = workers.procs[2]
            os.killpg(victim.pid, signal.SIGKILL)  # the whole worker, as a dead machine
            deadline = time.monotonic() + 120
            while store.status() not in FINISHED:
                assert time.monotonic() < deadline, store.state()
                time.sleep(0.1)
            state = store.state()
            assert state["status"] == "done" and state["test_accuracy"] > 0.9, (state, store.evals())
            for epoch in range(spec.epochs):  # every sample exactly once per epoch, no overlaps
                pieces = epoch_pieces(client, store, epoch)
                covered = [i for s, e in pieces for i in range(s, e)]
                assert sorted(covered) == list(range(spec.n_train)), epoch
            moved = [e for e in store.events() if e["event"] == "reassigned"]
            # The victim's ranges moved for its missing heartbeat (under heavy load a live
            # worker's beat can be late too; its ranges then move for the same logged reason).
            assert any("no heartbeat from " + workers.names[2] in e["reason"] for e in moved), moved
            stats = store.worker_stats()
            # Work is recorded after its push: a worker killed between the two leaves one range
            # applied but not in the statistics (seen once in a full suite: 39,500 of 40,000).
            largest = max(e - s for epoch in range(spec.epochs) for s, e in epoch_pieces(client, store, epoch))
            assert sum(s["samples"] for n, s in stats.items()) >= spec.epochs * spec.n_train - largest
            assert registered(client)[workers.names[0]]["rate"] > 0  # measured throughput in the registry
            app.close()


def test_idpa_job_with_three_workers_gives_the_slow_one_less(tmp_path):
    with PrivateRedis() as server:
        settings = Settings(redis_url=server.url, workers=3, poll_seconds=0.05)
        with LocalWorkers(settings, 3, slowdowns=[1.0, 1.0, 4.0]) as workers:
            app = make_app(settings)
            client = connect(server.url)
            spec, data, weights = prepare(JobChoices(DatasetSpec("digits-aug", samples=8000), epochs=2, workers=3,
                                                     partition="idpa"), job_id="uneven-idpa")
            store = submit(app, client, settings, spec, data, weights)
            while store.status() not in FINISHED:
                time.sleep(0.1)
            stats = store.worker_stats()
            slow = stats[workers.names[2]]["samples"]
            fast = min(stats[workers.names[0]]["samples"], stats[workers.names[1]]["samples"])
            assert store.state()["status"] == "done"
            assert slow < 0.6 * fast  # about 1/4 of a fast worker's share, with room for the probe
            app.close()


def test_a_round_moves_a_range_held_by_a_live_worker_that_never_completed_a_task(client, job_id):
    """Finding 4 of issue 15, through the scheduler's round on a real Redis."""
    import uuid

    from bpt.plan.idpa import UNMEASURED_OVERDUE
    from bpt.broker import clock, worker_registry
    from bpt.broker.job_store import JobStore
    from bpt.workers import scheduler

    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1, partition="idpa"), job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    hung = "hung-" + uuid.uuid4().hex[:6]
    worker_registry.heartbeat(client, hung, processes=1)  # alive, and no rate: it never finished a task
    now = clock.now(client)
    state = scheduler.initial_state(now)
    state["cursor"] = 128
    state["outstanding"] = {"0:128": {"worker": hung, "start": 0, "end": 128, "at": now - UNMEASURED_OVERDUE - 1}}
    try:
        scheduler._plan(store, spec, state, timeout=30.0, now=now)
        moved = [e for e in store.events() if e["event"] == "reassigned"]
        assert moved and moved[0]["piece"] == "0:128" and "without the worker ever completing" in moved[0]["reason"]
        assert state["outstanding"].get("0:128", {}).get("worker") != hung
    finally:
        worker_registry.forget(client, hung)
        store.delete()


def test_a_round_sizes_a_workers_share_by_its_rate_in_this_job_times_its_processes(job_id):
    """Issue 16: rates are per training process and per job (this job's rate wins over the
    registry's seed), and a worker's queue feeds all its processes. Its own Redis: the
    session's live workers would take part in the round and set its horizon."""
    with PrivateRedis() as server:
        _sizes_by_rate_times_processes(connect(server.url), job_id)


def _sizes_by_rate_times_processes(client, job_id):
    import uuid

    from bpt.broker import clock, worker_registry
    from bpt.broker.job_store import JobStore
    from bpt.workers import scheduler

    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1, partition="idpa", subset_size=128),
                                  job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    tag = uuid.uuid4().hex[:6]
    four, one = f"four-{tag}", f"one-{tag}"
    worker_registry.heartbeat(client, four, processes=4)
    worker_registry.heartbeat(client, one, processes=1)
    client.hset(worker_registry.worker_key(one), "rate", 10_000)  # the registry's seed: this job's rate wins
    client.hset(store.keys.rates, mapping={four: 100.0, one: 100.0})
    now = clock.now(client)
    state = scheduler.initial_state(now)
    state["probe_size"] = 64
    try:
        sends, _, _ = scheduler._plan(store, spec, state, timeout=30.0, now=now)
        share = {w: sum(e - s for n, s, e in sends if n == w) for w in (four, one)}
        assert share[one] > 0 and share[four] >= 3.5 * share[one], share
    finally:
        worker_registry.forget(client, four)
        worker_registry.forget(client, one)
        store.delete()


def test_a_tasks_rate_lands_in_the_jobs_table_and_the_worker_entry_expires(client, job_id):
    import threading
    import uuid

    from bpt.broker import worker_registry
    from bpt.broker.keys import JobKeys

    name, rates = "rated-" + uuid.uuid4().hex[:6], JobKeys(job_id).rates
    try:
        assert worker_registry.record_task(client, name, 100, 1.0, rates) == 100.0
        assert worker_registry.record_task(client, name, 300, 1.0, rates) == 200.0  # EWMA 0.5
        threads = [threading.Thread(target=worker_registry.record_task, args=(client, name, 200, 1.0, rates))
                   for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert float(client.hget(rates, name)) == pytest.approx(200.0)
        assert 0 < client.ttl(worker_registry.worker_key(name)) <= worker_registry.WORKER_TTL
    finally:
        worker_registry.forget(client, name)
        client.delete(rates)


def test_an_expired_worker_entry_leaves_the_index(client):
    import uuid

    from bpt.broker import worker_registry

    name = "gone-" + uuid.uuid4().hex[:6]
    worker_registry.heartbeat(client, name)
    assert name in worker_registry.workers(client)
    client.delete(worker_registry.worker_key(name))  # what WORKER_TTL does after its last beat
    assert name not in worker_registry.workers(client)
    assert not client.sismember(worker_registry.WORKERS_INDEX, name)
