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
