"""Where a resumed job picks up (bpt.job.resume), without Redis."""

from bpt.job import resume

ASYNC = [[[0, 1, 2, 3]], [[2, 0, 3, 1]], [[1, 3, 0, 2]]]  # 3 epochs, one wave each
SYNC = [[[0, 1], [2, 3]], [[3, 1], [0, 2]]]  # 2 epochs, rounds of two


def fields(pairs):
    return [f"{e}:{s}" for e, s in pairs]


def test_the_earliest_unfinished_wave_and_the_released_one_after_it_get_their_missing_subsets():
    applied = fields([(0, 0), (0, 1), (0, 2), (0, 3), (1, 2), (1, 0), (2, 1)])
    plan = resume.plan(ASYNC, False, applied)  # from a file: releases are derived
    assert plan.done[(1, 0)] == {0, 2} and plan.done[(2, 0)] == {1}
    assert plan.released == {(0, 0), (1, 0)}
    assert plan.send == ((1, 0, (3, 1)), (2, 0, (3, 0, 2)))
    assert not plan.finished


def test_a_wave_released_with_nothing_applied_yet_is_sent_whole_in_place():
    applied = fields([(0, 0), (0, 1), (0, 2)])
    derived = resume.plan(ASYNC, False, applied)
    assert derived.send == ((0, 0, (3,)),)  # the next wave goes out when this one nears its end
    in_place = resume.plan(ASYNC, False, applied, released={(0, 0)})
    assert in_place.send == ((0, 0, (3,)), (1, 0, (2, 0, 3, 1)))  # its release was made: its messages died


def test_nothing_applied_is_sent_again_and_a_fresh_job_starts_at_its_first_wave():
    assert resume.plan(ASYNC, False, []).send == ((0, 0, (0, 1, 2, 3)),)
    every = fields((e, s) for e in range(3) for s in range(4))
    done = resume.plan(ASYNC, False, every)
    assert done.send == () and done.finished


def test_a_sync_round_not_committed_is_trained_again_whole_from_a_file_and_kept_in_place():
    applied = fields([(0, 0), (0, 1), (0, 2)])  # round (0, 0) committed; (0, 1) half staged
    from_file = resume.plan(SYNC, True, applied, None, committed={(0, 0)})
    assert (0, 1) not in from_file.done and from_file.send == ((0, 1, (2, 3)),)
    in_place = resume.plan(SYNC, True, applied, released={(0, 0)}, committed={(0, 0)})
    assert in_place.done[(0, 1)] == {2} and in_place.send == ((0, 1, (3,)),)


def test_only_failed_and_cancelled_jobs_resume_and_the_others_say_what_to_do():
    assert resume.resume_refusal("failed", "j") is None and resume.resume_refusal("cancelled", "j") is None
    assert "--init-from" in resume.resume_refusal("done", "j")
    assert "bpt resume j" in resume.resume_refusal("paused", "j")
    assert "bpt wait j" in resume.resume_refusal("running", "j")
    assert resume.partition_refusal("greedy", "j") is None and "--init-from" in resume.partition_refusal("idpa", "j")


def test_a_sync_round_staged_whole_but_never_committed_is_committed_in_place_not_left_waiting():
    """Review finding: every delta of a round staged, the round not merged (its committer
    failed or a cancel landed mid-merge): in place there is nothing to send, so the plan says
    commit it (else the job stayed queued forever)."""
    applied = fields([(0, 0), (0, 1), (0, 2), (0, 3)])
    in_place = resume.plan(SYNC, True, applied, released={(0, 0)}, committed={(0, 0)})
    assert in_place.send == () and in_place.commit == (0, 1) and not in_place.finished
    from_file = resume.plan(SYNC, True, applied, None, committed={(0, 0)})
    assert from_file.commit is None and from_file.send == ((0, 1, (2, 3)),)  # its deltas are not in the file
