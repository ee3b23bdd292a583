"""What a task does after its push (bpt.job.task), without Redis."""

from bpt.job import task


def test_an_installed_version_on_the_interval_is_evaluated_guarded_then_the_job_moves_on():
    assert task.after_push(12, True, 6, True, True, False, True) == [task.Evaluate(12), task.Guard(12),
                                                                     task.MoveOn(True)]


def test_off_the_interval_only_the_move_on_and_a_range_task_asks_for_work():
    assert task.after_push(13, True, 6, False, True, False, False) == [task.MoveOn(False)]


def test_a_staged_sync_push_installs_nothing_and_is_never_guarded():
    assert task.after_push(12, False, 6, True, True, True, True) == [task.MoveOn(True)]
    assert task.after_push(12, True, 6, True, True, True, True) == [task.Evaluate(12), task.MoveOn(True)]


def test_the_guardrail_off_is_never_checked():
    assert task.Guard(12) not in task.after_push(12, True, 5, True, False, False, True)


def test_a_committed_sync_round_is_evaluated_when_it_ends_its_epoch():
    """Epochs of 4 rounds (K = 2 and 8 subsets): the fourth round of each epoch is evaluated,
    not every 8th version (every n_subsets versions would be once in 2 epochs)."""
    assert task.after_commit(4, 0, 3, 4) == [task.Evaluate(4)]
    assert task.after_commit(7, 0, 2, 4) == []
    assert task.after_commit(8, 0, 3, 4) == [task.Evaluate(8)]


def test_a_sync_job_with_eval_every_is_evaluated_every_that_many_rounds():
    assert task.after_commit(6, 3, 1, 4) == [task.Evaluate(6)]
    assert task.after_commit(4, 3, 3, 4) == []  # the epoch's end is not due then
