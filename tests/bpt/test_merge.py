import numpy as np
import pytest

from bpt.train import merge, rule_step
from bpt.errors import ConfigError


def w(*values):
    return {"a": np.array(values, dtype=np.float32)}


def test_accuracy_weight_is_relative_to_recent_mean_and_clipped():
    assert merge.accuracy_weight(0.9, [0.6, 0.9, 0.9]) == pytest.approx(0.9 / 0.8)
    assert merge.accuracy_weight(0.9, [0.1, 0.2]) == 2.0  # 6x the mean, clipped to 2
    assert merge.accuracy_weight(0.0, [0.5]) == 0.0
    assert merge.accuracy_weight(0.7, []) == 1.0  # no history: counts as average


def test_agwu_contribution_hand_computed():
    rule = merge.MergeRule("agwu", alpha=0.8, gamma=0.5, s_max=3)
    assert rule_step.contribution(rule, 0, 1.0) == pytest.approx(0.8)
    assert rule_step.contribution(rule, 2, 1.5) == pytest.approx(0.8 * 0.25 * 1.5)  # 0.3
    assert rule_step.contribution(rule, 3, 1.0) == pytest.approx(0.1)
    assert rule_step.contribution(rule, 4, 1.0) is None  # staler than s_max: rejected


def test_plain_async_ignores_staleness_and_accuracy_within_the_bound():
    rule = merge.MergeRule("async", alpha=1.0, gamma=0.5, s_max=5)
    assert rule_step.contribution(rule, 5, 0.1) == 1.0
    assert rule_step.contribution(rule, 6, 1.0) is None


def test_apply_delta_hand_computed():
    out = merge.apply_delta(w(1.0, 2.0), w(4.0, -2.0), 0.25)
    np.testing.assert_allclose(out["a"], [2.0, 1.5])
    assert out["a"].dtype == np.float32


def test_apply_delta_counts_integer_buffers_unscaled():
    weights = {"n": np.array(10, dtype=np.int64), "a": np.zeros(2, np.float32)}
    delta = {"n": np.array(4, dtype=np.int64), "a": np.ones(2, np.float32)}
    assert merge.apply_delta(weights, delta, 0.5)["n"] == 14


def test_sync_merge_weights_by_q_times_samples():
    # q n = (1 * 10, 3 * 30) = (10, 90): W + (10 * 1 + 90 * 2) / 100 = 1 + 1.9
    out = merge.sync_merge(w(1.0), [w(1.0), w(2.0)], [10, 30], [1.0, 3.0])
    np.testing.assert_allclose(out["a"], [2.9])


def test_sync_merge_with_all_zero_accuracy_falls_back_to_samples():
    out = merge.sync_merge(w(0.0), [w(1.0), w(3.0)], [1, 3], [0.0, 0.0])
    np.testing.assert_allclose(out["a"], [2.5])


def test_layout_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        merge.apply_delta(w(1.0, 2.0), w(1.0), 1.0)
    with pytest.raises(ValueError, match="names"):
        merge.apply_delta(w(1.0), {"b": np.zeros(1, np.float32)}, 1.0)


@pytest.mark.parametrize("kwargs", [{"kind": "hogwild"}, {"gamma": 0.0}, {"gamma": 1.5}, {"alpha": 0}, {"s_max": -1}])
def test_invalid_rules_are_refused(kwargs):
    with pytest.raises(ConfigError):
        merge.MergeRule(**kwargs)


def test_default_alpha_makes_a_group_of_same_version_pushes_one_step():
    from bpt.data.prepare import default_alpha
    assert default_alpha("agwu", 0.5) == 0.5
    assert default_alpha("agwu", 1.0) == 1.0  # no decay: nothing to normalise
    assert default_alpha("async", 0.5) == default_alpha("sync", 0.5) == 1.0
    rule = merge.MergeRule("agwu", alpha=default_alpha("agwu", 0.5), gamma=0.5, s_max=10**6)
    total = sum(rule_step.contribution(rule, s, 1.0) for s in range(60))  # 60 workers pulled the same version
    assert total == pytest.approx(1.0)


def test_normalized_contribution_divides_by_the_live_workers_hand_computed():
    rule = merge.MergeRule("normalized", alpha=1.0)  # s_max None: twice the live workers
    assert rule_step.contribution(rule, 15, 1.5, live=16) == pytest.approx(1.5 / 16)  # 0.09375
    assert rule_step.contribution(rule, 0, 1.0, live=4) == pytest.approx(0.25)
    assert rule_step.contribution(rule, 32, 1.0, live=16) == pytest.approx(1 / 16)  # s = 2K: still accepted
    assert rule_step.contribution(rule, 33, 1.0, live=16) is None  # staler than 2K: rejected
    assert rule_step.contribution(rule, 9, 1.0, live=4) is None  # the bound follows K as workers leave
    assert rule_step.contribution(merge.MergeRule("normalized", alpha=0.5, s_max=3), 3, 2.0, live=8) == pytest.approx(0.125)


def test_k_pushes_from_one_version_count_as_one_step_under_normalized_not_under_agwu():
    """K workers that pulled the same version push in turn (staleness 0..K-1): normalized
    weighs them to a total of 1 at every K; the paper's AGWU to (1-gamma^K)/(1-gamma) x alpha for
    the group but gamma^(K-1) for the steady-state push, which is what starves 16 workers."""
    for k in (2, 16, 64):
        rule = merge.MergeRule("normalized")
        assert sum(rule_step.contribution(rule, s, 1.0, live=k) for s in range(k)) == pytest.approx(1.0)
    agwu = merge.MergeRule("agwu", alpha=0.5, gamma=0.5)
    assert rule_step.contribution(agwu, 15, 1.0, live=16) == pytest.approx(0.5 * 0.5 ** 15)  # 1.5e-5


def test_default_rule_is_normalized_and_s_max_follows_the_cluster():
    rule = merge.MergeRule()
    assert rule.kind == merge.DEFAULT_RULE == "normalized"
    assert rule.s_max is None and rule.staleness_bound(8) == 16 and rule.staleness_bound(0) == 2
    assert rule.resolved(5).s_max == 10
    assert merge.MergeRule(s_max=3).resolved(5).s_max == 3
