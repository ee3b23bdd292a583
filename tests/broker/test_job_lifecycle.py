"""The job's state machine as Redis applies it (transition.lua), and pushes into jobs that
no longer run, each against a real Redis server (issue 15, finding 1)."""

import itertools
import threading

import numpy as np
import pytest

from bpt.job import lifecycle as lc
from bpt.train.merge import MergeRule
from bpt.broker import clock
from bpt.broker.connection import connect
from bpt.broker.job_store import JobStore
from bpt.broker.weight_store import WeightStore

PLAIN = MergeRule("async", alpha=1.0, gamma=1.0, s_max=10**9)


def job(client, job_id, status, since=None):
    store = JobStore(client, job_id)
    now = clock.now(client) if since is None else since
    client.hset(store.keys.state, mapping={"status": status, "since": now})
    return store


@pytest.mark.parametrize("state,move", list(itertools.product(lc.STATES, lc.MOVES)))
def test_redis_applies_exactly_the_moves_the_pure_machine_allows(client, job_id, state, move):
    store = job(client, job_id, state)
    moved = store.move(move)
    assert moved.ok == lc.is_legal(state, move) and moved.previous == state
    assert store.status() == (lc.apply(state, move) if moved.ok else state)


def test_a_refused_move_changes_nothing_and_is_logged(client, job_id):
    store = job(client, job_id, "done")
    client.hset(store.keys.state, "test_accuracy", 0.97)
    assert not store.move("pause").ok
    assert store.state()["status"] == "done" and store.state()["test_accuracy"] == 0.97
    assert store.events()[-1]["event"] == "transition-refused"
    assert store.events()[-1]["move"] == "pause" and store.events()[-1]["status"] == "done"


def test_a_move_on_a_missing_job_is_refused(client, job_id):
    moved = JobStore(client, job_id).move("cancel")
    assert not moved.ok and moved.previous == "unknown"
    assert not client.exists(JobStore(client, job_id).keys.state)


def test_of_many_concurrent_claims_exactly_one_wins(redis_url, client, job_id):
    job(client, job_id, "running")
    wins, barrier = [], threading.Barrier(16)

    def claim():
        store = JobStore(connect(redis_url), job_id)
        barrier.wait()
        wins.append(store.claim_finish())

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 15 + [True]
    assert JobStore(client, job_id).status() == "finishing"


def test_a_silent_finisher_is_replaced_after_the_patience_by_redis_time(client, job_id):
    now = clock.now(client)
    assert not job(client, job_id, "finishing", since=now - lc.FINISH_PATIENCE + 5).claim_finish()
    assert job(client, job_id, "finishing", since=now - lc.FINISH_PATIENCE - 5).claim_finish()


def test_moves_stamp_redis_time(client, job_id):
    store = job(client, job_id, "queued")
    before = clock.now(client)
    store.mark_running()
    state = store.state()
    assert state["status"] == "running" and before <= state["started"] <= clock.now(client)
    assert store.events()[-1]["event"] == "started"
    store.mark_running()  # every task tries; only the first moves it
    assert [e["event"] for e in store.events()].count("started") == 1


def test_cancel_keeps_a_done_job_done(client, job_id):
    store = job(client, job_id, "done")
    assert not store.cancel() and store.status() == "done"
    store = job(client, job_id + "-b", "running")
    assert store.cancel() and store.state()["error"] == "cancelled by user"


# -- pushes into a job that no longer runs (finding 1) --------------------------------------
def delta():
    return {"w": np.ones(10, np.float32)}


@pytest.mark.parametrize("status", ["finishing", "done", "failed", "cancelled"])
def test_a_push_into_a_job_that_no_longer_runs_is_refused_and_records_nothing(client, job_id, status):
    weights = WeightStore(client, job_id)
    weights.initialize({"w": np.zeros(10, np.float32)})
    store = job(client, job_id, "running")
    assert weights.push(rule=PLAIN, pulled_version=0, delta=delta(), accuracy=0.9, epoch=0, wave=0,
                        subset=0).status == "accepted"
    client.hset(store.keys.state, "status", status)
    result = weights.push(rule=PLAIN, pulled_version=1, delta=delta(), accuracy=0.9, epoch=0, wave=0, subset=1)
    assert result.status == "closed" and weights.version() == 1
    assert not weights.is_applied(0, 1) and store.done_count(0, 0) == 1
    assert not client.exists(store.keys.merge_lease)  # the lease was given back
    # nor can a too-stale push be recorded as rejected, nor a sync delta staged
    tight = MergeRule("async", alpha=1.0, gamma=1.0, s_max=0)
    assert weights.push(rule=tight, pulled_version=0, delta=delta(), accuracy=0.9, epoch=0, wave=0,
                        subset=2).status == "closed"
    assert weights.stage(delta=delta(), samples=10, accuracy=0.9, epoch=0, wave=0, subset=3).status == "closed"
    assert not weights.is_applied(0, 2) and not weights.is_applied(0, 3)
    assert store.state().get("rejected", 0) == 0


def test_a_paused_job_still_merges_its_in_flight_pushes(client, job_id):
    weights = WeightStore(client, job_id)
    weights.initialize({"w": np.zeros(10, np.float32)})
    job(client, job_id, "paused")
    assert weights.push(rule=PLAIN, pulled_version=0, delta=delta(), accuracy=0.9, epoch=0, wave=0,
                        subset=0).status == "accepted"


def test_a_sync_round_is_not_committed_into_a_cancelled_job(client, job_id):
    weights = WeightStore(client, job_id)
    weights.initialize({"w": np.zeros(10, np.float32)})
    store = job(client, job_id, "running")
    weights.stage(delta=delta(), samples=10, accuracy=0.9, epoch=0, wave=0, subset=0)
    assert store.cancel()
    sync = MergeRule("sync", alpha=1.0)
    assert weights.commit_round(rule=sync, epoch=0, wave=0).status == "closed" and weights.version() == 0
