"""The worker registry on a real Redis: the live K, and distinct default names."""

import time
import uuid

from bpt.broker import worker_registry


def test_live_processes_counts_each_workers_concurrency_and_drops_silent_ones(client):
    host = "h-" + uuid.uuid4().hex[:6]  # names of our own: the session's workers beat here too
    now = time.time()
    before = sum(w["processes"] for w in worker_registry.workers(client).values() if worker_registry.is_alive(w, now, 5.0))
    worker_registry.heartbeat(client, f"a@{host}", processes=4)
    worker_registry.heartbeat(client, f"b@{host}", processes=1)
    assert worker_registry.live_processes(client, timeout=5.0) == before + 5
    # b's last beat is now 10 s old: dead to a 5 s timeout, so K drops by its one process
    client.hset(worker_registry.worker_key(f"b@{host}"), "heartbeat", time.time() - 10)
    assert worker_registry.live_processes(client, timeout=5.0) == before + 4
    assert worker_registry.workers(client)[f"a@{host}"]["processes"] == 4
    for name in (f"a@{host}", f"b@{host}"):
        worker_registry.forget(client, name)


def test_two_workers_on_one_host_claim_distinct_names_and_a_name_is_kept_by_its_owner(client):
    host = "h-" + uuid.uuid4().hex[:6]
    first = worker_registry.claim_name(client, "bpt", host, ttl=5.0, token="one")
    second = worker_registry.claim_name(client, "bpt", host, ttl=5.0, token="two")
    assert (first, second) == (f"bpt@{host}", f"bpt-2@{host}")
    assert worker_registry.claim_name(client, "bpt", host, ttl=5.0, token="one") == first  # a restart of one
    client.delete(worker_registry.name_claim_key(first))  # its claim expired: the name is free again
    assert worker_registry.claim_name(client, "bpt", host, ttl=5.0, token="three") == first
    for name in (first, second):  # leave no keys: other tests compare the server's keys over time
        client.delete(worker_registry.name_claim_key(name))


def test_a_worker_that_signs_off_is_dead_at_once_and_its_name_is_free_for_its_restart(client):
    host = "h-" + uuid.uuid4().hex[:6]
    name = worker_registry.claim_name(client, "bpt", host, ttl=30.0, token="first-run")
    worker_registry.heartbeat(client, name, processes=3)
    live = worker_registry.live_processes(client, timeout=30.0)
    assert worker_registry.claim_name(client, "bpt", host, ttl=30.0, token="other") == f"bpt-2@{host}"
    worker_registry.sign_off(client, name, "first-run")
    assert worker_registry.live_processes(client, timeout=30.0, floor=0) == live - 3
    assert worker_registry.claim_name(client, "bpt", host, ttl=30.0, token="second-run") == name
    worker_registry.heartbeat(client, name, processes=3)  # the restarted worker beats: alive again
    assert worker_registry.live_processes(client, timeout=30.0) == live
    worker_registry.forget(client, name)
    for n in (name, f"bpt-2@{host}"):
        client.delete(worker_registry.name_claim_key(n))


def test_a_worker_whose_clock_is_far_behind_or_ahead_is_judged_by_redis_time(client, monkeypatch):
    """Finding 3 of issue 15: heartbeats carried the worker's own time.time(); one 10 s behind
    was dead at every round, one ahead never died. Now Redis's TIME stamps and judges."""
    from bpt.broker import clock

    host = "h-" + uuid.uuid4().hex[:6]
    real = time.time
    for skew, name in ((-600.0, f"behind@{host}"), (600.0, f"ahead@{host}")):
        monkeypatch.setattr(time, "time", lambda skew=skew: real() + skew)
        worker_registry.heartbeat(client, name, processes=1)
    monkeypatch.setattr(time, "time", real)
    now = clock.now(client)
    registered = worker_registry.workers(client)
    assert worker_registry.is_alive(registered[f"behind@{host}"], now, timeout=5.0)
    assert not worker_registry.is_alive(registered[f"ahead@{host}"], now + 10, timeout=5.0)  # it dies on time
    for name in (f"behind@{host}", f"ahead@{host}"):
        worker_registry.forget(client, name)


def test_workers_that_declined_a_job_do_not_count_in_its_live_k(client, job_id):
    """Issue 26, finding 6: two trainers and two decliners made K = 4 and halved every push.
    The push path counts live_processes(exclude=the job's lacking workers)."""
    from bpt.broker.job_store import JobStore

    host = "h-" + uuid.uuid4().hex[:6]
    now = time.time()
    before = sum(w["processes"] for w in worker_registry.workers(client).values() if worker_registry.is_alive(w, now, 5.0))
    for name in ("t1", "t2", "d1", "d2"):
        worker_registry.heartbeat(client, f"{name}@{host}", processes=1)
    store = JobStore(client, job_id)
    for name in ("d1", "d2"):
        store.declined_by(f"{name}@{host}", "no plug-in mypkg:net here")
    assert worker_registry.live_processes(client, 5.0) == before + 4
    assert worker_registry.live_processes(client, 5.0, exclude=store.lacking()) == before + 2
    for name in ("t1", "t2", "d1", "d2"):
        worker_registry.forget(client, f"{name}@{host}")
    client.delete(store.keys.lacking)


def test_a_worker_started_under_a_used_name_starts_its_counts_from_zero_and_keeps_its_rate(client):
    """Issue 28: a reused worker name inherited the dead worker's task count."""

    name = f"reused-{uuid.uuid4().hex[:6]}@host"
    try:
        worker_registry.record_task(client, name, samples=256, seconds=0.1)
        worker_registry.start_fresh(client, name)
        worker_registry.heartbeat(client, name)
        entry = worker_registry.workers(client)[name]
        assert entry["tasks"] == 0 and entry["samples"] == 0 and entry["rate"] > 0
    finally:
        worker_registry.forget(client, name)
