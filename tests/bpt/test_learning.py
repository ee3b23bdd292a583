import pytest

from bpt.train import learning


def test_near_chance_is_within_five_points_of_one_over_classes():
    assert learning.near_chance(0.092, 10) and learning.near_chance(0.15, 10)
    assert not learning.near_chance(0.151, 10)
    assert learning.near_chance(0.54, 2) and not learning.near_chance(0.56, 2)


def test_verdict_names_chance_a_fall_or_nothing():
    evals = [{"accuracy": a} for a in (0.5, 0.97, 0.98)]
    assert "no better than chance" in learning.verdict(0.092, evals, 10)
    assert "fell from its best 0.980" in learning.verdict(0.85, evals, 10)
    assert learning.verdict(0.975, evals, 10) is None  # within 10 points of its best
    assert learning.verdict(0.9, [], 10) is None


def _evals(vals):
    """Evaluations during a job (validation and test accuracy alike here) and its final one."""
    return [{"accuracy": v, "val_accuracy": v} for v in vals] + [{"accuracy": vals[-1], "final": True}]


def test_a_job_still_climbing_when_its_epochs_ran_out_says_so_and_names_the_workers():
    climbing = _evals([0.10, 0.20, 0.23, 0.28, 0.32, 0.36, 0.40, 0.42])  # shaped like glyphs at 4 workers
    warning = learning.verdict(0.42, climbing, 10, all_epochs=True, workers=4)
    assert "still learning" in warning and "0.280" in warning and "0.420" in warning
    assert "fewer than 4 training processes" in warning
    assert "fewer than" not in learning.verdict(0.42, climbing, 10, all_epochs=True, workers=1)
    assert learning.verdict(0.42, climbing, 10, all_epochs=False, workers=4) is None  # a target or patience stopped it


def test_a_converged_or_stuck_job_is_not_still_learning():
    converged = _evals([0.35, 0.61, 0.84, 0.92, 0.95, 0.98, 0.97, 0.97, 0.98, 0.97])  # shaped like digits
    assert learning.verdict(0.98, converged, 10, all_epochs=True, workers=2) is None
    plateau = _evals([0.29, 0.40, 0.58, 0.67, 0.62, 0.62, 0.62, 0.62])  # stuck: no rise to name
    assert learning.verdict(0.66, plateau, 3, all_epochs=True, workers=3) is None
    # the margin: 4.9 points over the first half's best is not a rise, 5 is
    assert learning.still_learning(_evals([0.5, 0.5, 0.5, 0.549])) is None
    assert learning.still_learning(_evals([0.5, 0.5, 0.5, 0.55])) is not None
    assert learning.still_learning(_evals([0.9, 0.9, 0.9, 0.95])) is not None  # 0.9 + 0.05 > 0.95 in floats
    assert learning.rise(_evals([0.9, 0.8, 0.85, 0.95])) == pytest.approx(0.05)


def test_a_final_evaluation_that_scored_validation_counts():
    """Under sync the last round is evaluated only by the job's finish, which scores the
    validation split too: without it a 4-epoch sync job would have 3 scores and no verdict."""
    rounds = [{"accuracy": v, "val_accuracy": v} for v in (0.2, 0.3, 0.4)]
    assert learning.still_learning(rounds) is None
    final = {"accuracy": 0.5, "val_accuracy": 0.5, "final": True}
    assert "0.300 over the first half" in learning.still_learning(rounds + [final])


def test_too_few_evaluations_or_none_from_workers_say_nothing():
    assert learning.still_learning(_evals([0.1, 0.5, 0.9])) is None
    assert learning.still_learning([{"accuracy": a} for a in (0.1, 0.3, 0.5, 0.7, 0.9)]) is None  # no val_accuracy
