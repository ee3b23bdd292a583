"""The merge rules' step (bpt.train.rule_step): pure, so tested without Redis; the store's
side of it (the state kept with the weights) is in tests/broker/test_weight_store.py."""

import math

import pytest

from bpt.train import noise_scale, rule_step
from bpt.train.merge import MergeRule
from bpt.train.noise_scale import GradStats
from bpt.train.rule_step import Push


def test_the_scalar_rules_are_the_contribution_formulas_and_keep_no_state():
    for rule, push, scale in [
        (MergeRule("normalized"), Push(3, 1.5, live=4), 1.5 / 4),
        (MergeRule("agwu", alpha=0.8, gamma=0.5, s_max=3), Push(2, 1.5), 0.8 * 0.25 * 1.5),
        (MergeRule("async", alpha=1.0), Push(5, 0.1, live=8), 1.0),
    ]:
        assert rule_step.step(rule, {}, push) == ({}, pytest.approx(scale))
        assert rule_step.contribution(rule, push.staleness, push.q, push.live) == pytest.approx(scale)


def test_a_push_too_stale_is_refused_and_leaves_the_state_as_it_was():
    state = {"n": 3.0, "small": 1.0}
    assert rule_step.step(MergeRule("adascale", s_max=2), state, Push(3, 1.0, stats=GradStats(2, 16, 5, 1))) == (
        state, None)
    with pytest.raises(ValueError):
        rule_step.step(MergeRule("normalized"), {}, Push(-1, 1.0))
    with pytest.raises(ValueError, match="rounds"):
        rule_step.step(MergeRule("sync"), {}, Push(0, 1.0))


def stats(noise_batch: float, g2: float = 1.0, half: int = 16) -> GradStats:
    """The statistics a task would measure for a given noise scale: |g_b|^2 = g2 + tr(S)/b."""
    trace = noise_batch * g2
    return GradStats(2, half, g2 + trace / half, g2 + trace / (2 * half))


def gain_after(noise_batch: float, k: int, pushes: int = 5) -> tuple[dict, float]:
    state, scale = {}, None
    for _ in range(pushes):
        state, scale = rule_step.step(MergeRule("adascale"), state, Push(k - 1, 1.0, live=k, stats=stats(noise_batch)))
    return state, scale


def test_adascale_is_normalized_until_it_has_statistics():
    state, scale = rule_step.step(MergeRule("adascale"), {}, Push(3, 1.2, live=4))
    assert scale == pytest.approx(1.2 / 4) and state["gain"] == 1.0


def test_adascale_gain_follows_the_noise_scale_between_one_and_k():
    # Batches of 32 (halves of 16): B_noise = 320 is 10 batches, r = 11 / (10 / 4 + 1) at K = 4.
    state, scale = gain_after(320.0, 4)
    assert state["gain"] == pytest.approx(11 / 3.5, rel=1e-6) and scale == pytest.approx(state["gain"] / 4)
    assert gain_after(0.32, 4)[0]["gain"] == pytest.approx(1.0, abs=0.02)  # signal dominates: averaging only
    assert gain_after(1e6, 16)[0]["gain"] == pytest.approx(16, rel=0.01)  # noise dominates: steps add up
    assert gain_after(1e9, 16)[0]["gain"] <= 16


def test_adascale_averages_its_pushes_statistics_with_a_memory_of_32():
    state = {}
    for noise in [10.0] * 40 + [1000.0] * 200:  # an exponential memory of 32 pushes forgets the first regime
        state, _ = rule_step.step(MergeRule("adascale"), state, Push(0, 1.0, live=4, stats=stats(noise)))
    assert state["n"] == rule_step.ADASCALE_MEMORY
    assert state["gain"] == pytest.approx(gain_after(1000.0, 4)[0]["gain"], rel=0.01)


def test_the_state_as_stored_comes_back_and_a_damaged_one_starts_afresh():
    state = gain_after(320.0, 4)[0]
    assert rule_step.decode(rule_step.encode(state).encode()) == state
    assert rule_step.encode({}) == "" and rule_step.decode(None) == {} and rule_step.decode(b"") == {}
    assert rule_step.decode(b"not json") == {} and rule_step.decode(b"[1, 2]") == {}
    assert all(math.isfinite(v) for v in state.values())


def test_adascale_leaves_out_statistics_that_are_not_finite_and_positive():
    state = gain_after(320.0, 4)[0]
    for bad in (GradStats(2, 16, float("inf"), 1.0), GradStats(2, 16, float("nan"), 1.0), GradStats(2, 16, -1.0, 1.0),
                GradStats(0, 16, 5.0, 1.0)):
        after, scale = rule_step.step(MergeRule("adascale"), state, Push(3, 1.0, live=4, stats=bad))
        assert after == state and scale == pytest.approx(state["gain"] / 4)
    assert rule_step.decode(b'{"n": NaN, "gain": 2.0}') == {"gain": 2.0}
    assert rule_step.decode(b'{"n": 1' + b'0' * 400 + b', "gain": 2.0}') == {"gain": 2.0}
    assert noise_scale.estimate(float("inf"), 1.0, 16, 32) is None
    assert noise_scale.estimate(float("nan"), 1.0, 16, 32) is None and noise_scale.estimate(1e308, -1e308, 16, 32) is None
