"""The job's state machine (bpt.job.lifecycle), exhaustively, without Redis."""

import itertools

import pytest

from bpt.job import lifecycle as lc

# Every legal (state, move) -> state, written out by hand: the table the code must match.
LEGAL = {
    ("queued", "start"): "running",
    ("queued", "pause"): "paused",
    ("running", "pause"): "paused",
    ("paused", "resume"): "running",
    ("running", "claim"): "finishing",
    ("paused", "claim"): "finishing",
    ("finishing", "complete"): "done",
    **{(s, "cancel"): "cancelled" for s in ("queued", "running", "paused", "finishing")},
    **{(s, "fail"): "failed" for s in ("queued", "running", "paused", "finishing")},
    ("failed", "restart"): "queued",  # bpt train --resume (issue 28)
    ("cancelled", "restart"): "queued",
}


@pytest.mark.parametrize("state,move", list(itertools.product(lc.STATES, lc.MOVES)))
def test_every_state_and_move_pair_is_legal_exactly_as_the_table_says(state, move):
    if (state, move) in LEGAL:
        assert lc.apply(state, move) == LEGAL[(state, move)]
    else:
        with pytest.raises(lc.IllegalMove, match=f"cannot {move} a job that is {state}"):
            lc.apply(state, move)


def test_nothing_but_a_restart_leaves_an_ended_job_and_nothing_leaves_a_done_one():
    for state, move in itertools.product(lc.ENDED, lc.MOVES):
        legal = move == "restart" and state != "done"
        assert lc.is_legal(state, move, since=0, now=10**9) == legal


def test_a_finishing_claim_is_taken_over_only_once_its_holder_is_silent_long_enough():
    since = 1000.0
    assert not lc.is_legal("finishing", "claim", since, since + lc.FINISH_PATIENCE)
    assert lc.apply("finishing", "claim", since, since + lc.FINISH_PATIENCE + 1) == "finishing"
    assert not lc.is_legal("done", "claim", since, since + 10**6)  # takeover never reopens an ended job


def test_unknown_move_is_refused():
    with pytest.raises(lc.IllegalMove):
        lc.apply("running", "explode")


def test_what_a_task_does_in_each_state():
    assert [lc.on_task_start(s) for s in lc.STATES] == ["train", "train", "wait", "skip", "skip", "skip", "skip"]
    assert lc.on_task_start("unknown") == "skip"
    # a task error fails only a job still open; an ended job's errors are its consequences
    assert [lc.on_task_error(s) for s in lc.STATES] == ["fail"] * 4 + ["ignore"] * 3


# -- after a push: waves of the greedy partition -------------------------------------------
EIGHT = [[list(range(8))] for _ in range(3)]  # 3 epochs, one wave of 8 subsets each


def plan(status, epoch, done, live=2, shape=EIGHT, synchronous=False):
    return lc.after_push(shape, synchronous, status, epoch, 0, done, live)


def test_the_next_epoch_is_released_once_at_most_live_subsets_are_left():
    assert plan("running", 0, {(0, 0): 5}) == []  # three left, two workers
    assert plan("running", 0, {(0, 0): 6}) == [lc.Release(0, 0)]
    assert plan("running", 0, {(0, 0): 5}, live=8) == []  # at most a quarter of the wave: two
    assert plan("running", 0, {(0, 0): 6}, live=8) == [lc.Release(0, 0)]


def test_an_epoch_waits_for_the_one_before_it():
    assert plan("running", 1, {(1, 0): 7, (0, 0): 7}) == []
    # the straggler of epoch 0 completes it: epoch 2 (the wave after epoch 1) is released by
    # that push; epoch 1's own release is asked for again, and its claim (SET NX) makes it a no-op
    assert plan("running", 0, {(0, 0): 8, (1, 0): 7}) == [lc.Release(0, 0), lc.Release(1, 0)]


def test_the_job_finishes_when_its_last_two_waves_are_complete():
    assert plan("running", 2, {(2, 0): 8, (1, 0): 7}) == []
    assert plan("running", 2, {(2, 0): 8, (1, 0): 8}) == [lc.Finish()]
    assert plan("running", 1, {(1, 0): 8, (2, 0): 8, (0, 0): 8}) == [lc.Release(1, 0), lc.Finish()]  # epoch 1 last


def test_a_paused_job_still_moves_on_and_finishes_but_an_ended_or_finishing_one_does_nothing():
    done = {(2, 0): 8, (1, 0): 8}
    assert plan("paused", 2, done) == [lc.Finish()]
    for status in ("finishing", "done", "failed", "cancelled", "queued"):
        assert plan(status, 2, done) == [] and plan(status, 0, {(0, 0): 7}) == []


def test_sync_commits_each_complete_round_then_releases_or_finishes():
    shape = [[[0, 1], [2, 3]], [[1, 0], [3, 2]]]  # two epochs of two rounds
    assert lc.after_push(shape, True, "running", 0, 0, {(0, 0): 1}, 2) == []
    assert lc.after_push(shape, True, "running", 0, 0, {(0, 0): 2}, 2) == [lc.CommitRound(0, 0), lc.Release(0, 0)]
    assert lc.after_push(shape, True, "running", 1, 1, {(1, 1): 2}, 2) == [lc.CommitRound(1, 1), lc.Finish()]
    assert lc.after_push(shape, True, "cancelled", 0, 0, {(0, 0): 2}, 2) == []


def test_waves_to_read_cover_what_after_push_looks_at():
    shape = [[[0], [1], [2]] for _ in range(2)]
    reads = set(lc.waves_to_read(shape, 0, 1))
    assert {(0, 2), (0, 0), (1, 2), (1, 1)} <= reads and (0, 1) not in reads
