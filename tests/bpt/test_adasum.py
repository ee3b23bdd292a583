"""The asynchronous Adasum candidate (bpt.train.adasum): Adasum's defining cases by hand."""

import numpy as np

from bpt.train import adasum


def test_orthogonal_updates_add_up():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    assert np.allclose(adasum.combine(a, b), a + b)


def test_identical_updates_are_averaged_not_doubled():
    a = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    assert np.allclose(adasum.combine(a, a), a)


def test_a_push_with_nothing_applied_since_its_pull_adds_its_whole_delta():
    delta = {"w": np.array([[1.0, -2.0]], dtype=np.float32)}
    step = adasum.increment({"w": np.zeros((1, 2), dtype=np.float32)}, delta)
    assert np.array_equal(step["w"], delta["w"]) and step["w"].dtype == np.float32


def test_a_stale_push_repeating_what_was_applied_adds_nothing():
    applied = {"w": np.array([1.0, 1.0]), "n": np.array([3])}
    step = adasum.increment(applied, {"w": np.array([1.0, 1.0]), "n": np.array([1])})
    assert np.allclose(step["w"], 0.0)  # applied + step = adasum(applied, delta) = applied
    assert step["n"].tolist() == [1]  # integer counts taken as they are


def test_the_push_is_scaled_before_it_is_combined_and_counts_are_not_scaled():
    applied = {"w": np.array([0.0, 2.0]), "n": np.array([4])}
    step = adasum.increment(applied, {"w": np.array([3.0, 0.0]), "n": np.array([1])}, scale=0.5)
    assert np.allclose(step["w"], [1.5, 0.0])  # orthogonal to what was applied: added whole, at its scale
    assert step["n"].tolist() == [1] and step["n"].dtype == np.array([1]).dtype


def test_the_increment_makes_the_weights_the_adasum_of_both_layer_by_layer():
    rng = np.random.default_rng(0)
    applied = {"a": rng.normal(size=5), "b": rng.normal(size=(2, 3))}
    delta = {"a": rng.normal(size=5), "b": rng.normal(size=(2, 3))}
    step = adasum.increment(applied, delta)
    for name in applied:
        assert np.allclose(applied[name] + step[name], adasum.combine(applied[name], delta[name]))
