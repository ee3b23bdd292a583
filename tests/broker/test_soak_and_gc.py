"""Bounded soak of the weight store, and garbage collection of ended jobs."""

import threading
import time

import numpy as np
import pytest

from bpt.data.datasets import DatasetSpec
from bpt.train.merge import MergeRule
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.connection import connect
from bpt.broker.job_store import JobStore, collect_garbage, list_jobs
from bpt.broker.weight_store import WeightStore

N = 50_000  # 200 KB of float32 per version


@pytest.mark.slow
def test_soak_16_pushers_16_pullers(redis_url, client, job_id):
    store = WeightStore(client, job_id)
    store.initialize({"w": np.zeros(N, np.float32)})
    memory_before = client.info("memory")["used_memory"]
    stop = threading.Event()
    pushes, torn, pulls, errors = [0] * 16, [], [0] * 16, []
    rule = MergeRule("async", s_max=10**9)

    def pusher(p):
        own = WeightStore(connect(redis_url), job_id)
        i = 0
        try:
            while not stop.is_set():
                own.push(rule=rule, pulled_version=own.version(), delta={"w": np.ones(N, np.float32)},
                         accuracy=0.5, epoch=p, wave=0, subset=i)
                i += 1
        except Exception as e:
            errors.append(e)
        pushes[p] = i

    def puller(p):
        own = WeightStore(connect(redis_url), job_id)
        while not stop.is_set():
            pulled = own.pull()
            if not np.all(pulled.weights["w"] == pulled.version):
                torn.append(pulled.version)
            pulls[p] += 1

    threads = [threading.Thread(target=pusher, args=(p,)) for p in range(16)]
    threads += [threading.Thread(target=puller, args=(p,)) for p in range(16)]
    for t in threads:
        t.start()
    time.sleep(8)
    stop.set()
    for t in threads:
        t.join()
    assert not errors and not torn
    assert store.pull().version == sum(pushes) > 0 and sum(pulls) > 0
    # Only the newest version is kept: memory does not grow with the number of versions.
    assert client.info("memory")["used_memory"] - memory_before < 50 * N * 4 + 2**20
    JobStore(client, job_id).delete()


def test_gc_frees_staged_data_of_finished_jobs_and_orphans(client, job_id):
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1), job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    orphan = f"bpt:job:{{orphan-{job_id}}}:data:x_train"
    client.set(orphan, b"left behind")
    client.set(store.keys.wave_done(0, 0), 1)
    collect_garbage(client)
    assert client.exists(store.keys.data("x_train"))  # a running job keeps its data
    assert not client.exists(orphan)
    assert store.cancel()
    done_spec, done_data, done_weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1), job_id=job_id + "-done")
    done = JobStore.create(client, done_spec, done_data, done_weights, max_staged_bytes=2**30)
    client.set(done.keys.wave_done(0, 0), 1)
    done.mark_running()
    assert done.claim_finish() and done.complete(test_accuracy=0.9)
    report = collect_garbage(client)
    assert report["finished_jobs_cleaned"] >= 2
    assert not client.exists(store.keys.data("x_train")) and not client.exists(done.keys.data("x_train"))
    assert not client.exists(done.keys.wave_done(0, 0))  # a done job's bookkeeping goes
    assert client.exists(store.keys.wave_done(0, 0))  # issue 28: a cancelled job keeps what --resume needs
    assert store.state()["status"] == "cancelled"  # results stay
    collect_garbage(client, delete_finished=True)
    assert job_id not in list_jobs(client) and not client.exists(store.keys.state)
    assert job_id + "-done" not in list_jobs(client)


def test_gc_keeps_a_job_submitted_after_it_read_the_index(client, job_id, monkeypatch):
    """Issue 26, finding 1 (data loss): gc read the job index once and deleted every job key
    not in that copy, so a job submitted meanwhile lost its spec and state while indexed.
    Here gc's copy of the index is taken before the submit, as in the race."""
    from bpt.broker import job_store

    before = list_jobs(client)  # what gc read
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1), job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)  # submitted meanwhile
    monkeypatch.setattr(job_store, "list_jobs", lambda c: before)
    orphan = f"bpt:job:{{orphan-{job_id}}}:state"
    client.set(orphan, b"left behind")
    report = collect_garbage(client)
    assert store.spec() == spec and store.status() == "queued" and client.exists(store.keys.data("x_train"))
    assert not client.exists(orphan) and report["orphan_keys"] == 1
    store.delete()
