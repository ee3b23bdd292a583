"""The reconciler's decisions (bpt/job/reconcile.py), without Redis: one rule a test."""

from bpt.job import lifecycle
from bpt.job import reconcile
from bpt.job.reconcile import CommitRound, Fail, Finish, Release, Resend, Revive, Snapshot, Watch, decide


def snap(**kw) -> Snapshot:
    base = dict(job_id="j", status="running", since=0.0, now=100.0, greedy=True, synchronous=False, version=5,
                watched_version=5, watched_at=0.0, stall_limit=30.0, wave=(1, 0), missing=(3, 4), live=2)
    return Snapshot(**{**base, **kw})


def test_a_version_that_moved_is_only_noted():
    assert decide(snap(watched_version=4)) == [Watch(5)]
    assert decide(snap(watched_at=None, watched_version=None)) == [Watch(5)]


def test_a_stalled_wave_is_resent_after_the_limit_and_not_before():
    assert decide(snap(now=29.0)) == []
    assert decide(snap(now=31.0)) == [Resend(1, 0, (3, 4), "version 5 unchanged for 31s"), Watch(5)]


def test_nothing_is_resent_while_no_worker_could_take_it():
    assert decide(snap(live=0)) == []


def test_a_queued_job_is_looked_at_like_a_running_one():
    assert isinstance(decide(snap(status="queued", wave=(0, 0), version=0, watched_version=0))[0], Resend)


def test_a_paused_job_only_restarts_its_stall_clock():
    assert decide(snap(status="paused")) == [Watch(5)]


def test_a_sync_round_complete_but_not_committed_is_committed_then_released():
    actions = decide(snap(synchronous=True, missing=(), committed=False))
    assert actions[:2] == [CommitRound(1, 0), Release(1, 0)]
    last = decide(snap(synchronous=True, missing=(), committed=False, last_wave=True))
    assert last[0] == CommitRound(1, 0) and isinstance(last[1], Finish)


def test_a_job_with_every_wave_done_and_nobody_finishing_is_finished():
    assert isinstance(decide(snap(wave=None, missing=()))[0], Finish)


def test_a_silent_finisher_is_taken_over_after_the_patience_only():
    within = snap(status="finishing", since=100.0 - lifecycle.FINISH_PATIENCE + 1)
    after = snap(status="finishing", since=100.0 - lifecycle.FINISH_PATIENCE - 1)
    assert decide(within) == []
    assert decide(after)[0].takeover


def test_a_stalled_idpa_job_gets_a_new_chain_of_rounds_unless_paused():
    assert decide(snap(greedy=False, schedule_at=99.0)) == []
    assert decide(snap(greedy=False, schedule_at=90.0)) == [Revive(10.0)]
    assert decide(snap(greedy=False, schedule_at=90.0, status="paused")) == []


def test_a_spec_that_cannot_be_read_fails_the_job_and_ended_jobs_get_nothing():
    assert decide(snap(spec_error="bad json")) == [Fail("its spec cannot be read: bad json")]
    for status in lifecycle.ENDED:
        assert decide(snap(status=status)) == []


def test_workers_alive_before_and_dead_now_are_lost():
    assert reconcile.lost_workers({"a", "b", "c"}, {"a", "d"}) == ["b", "c"]


def test_the_stall_limit_grows_with_the_slowest_worker_and_the_queue_ahead():
    assert reconcile.stall_limit(256, []) == reconcile.STALL_MIN_SECONDS
    assert reconcile.stall_limit(3000, [100.0, 1000.0]) == 90.0
    assert reconcile.stall_limit(256, [256.0], queued=10) == reconcile.STALL_MIN_SECONDS + 10
    assert reconcile.stall_limit(256, [1.0], queued=10**6) == 3 * 256 + reconcile.MAX_BACKLOG_WAIT


def test_earliest_open_wave_walks_forward_and_stops_at_sync_rounds_not_committed():
    shape = [[[0, 1], [2, 3]], [[1, 0], [3, 2]]]
    done = {(0, 0): {0, 1}, (0, 1): {2, 3}, (1, 0): {1}}
    found = reconcile.earliest_open_wave(shape, False, (0, 0), lambda e, w: done.get((e, w), set()),
                                         lambda e, w: True)
    assert found == ((1, 0), (0,), False)
    sync = reconcile.earliest_open_wave(shape, True, (0, 0), lambda e, w: done.get((e, w), set()),
                                        lambda e, w: (e, w) == (0, 0))
    assert sync == ((0, 1), (), False)


def test_why_a_job_is_queued():
    assert reconcile.why_queued("running", 0, 0, "m") is None
    assert "no live worker" in reconcile.why_queued("queued", 0, 0, "m")
    assert "plug-in toy:m" in reconcile.why_queued("queued", 2, 0, "toy:m")
    assert reconcile.why_queued("queued", 2, 2, "m") is None
    assert reconcile.can_train("lenet5", "", {}) and not reconcile.can_train("toy:m", "1.0", {"toy:m": "0.9"})
