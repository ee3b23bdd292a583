from bpt.train import guardrail
from bpt.train import merge, rule_step
from bpt.train.guardrail import GuardState
from bpt.train.merge import MergeRule

BIG = 10_000  # a slice so large that the noise bound is below the margin: the margin decides


def test_a_fall_beyond_the_bound_at_confirm_checks_in_a_row_tightens_one_level():
    state, event = guardrail.observe(GuardState(), 0.90, margin=0.05, samples=BIG)
    assert event is None and state.best == 0.90 and state.level == 0
    state, event = guardrail.observe(state, 0.86, margin=0.05, samples=BIG)  # within the margin
    assert event is None and state.best == 0.90 and state.strikes == 0
    for strike in range(1, guardrail.CONFIRM):  # low checks short of CONFIRM: strikes only
        state, event = guardrail.observe(state, 0.80, margin=0.05, samples=BIG)
        assert event is None and state.level == 0 and state.strikes == strike
    state, event = guardrail.observe(state, 0.81, margin=0.05, samples=BIG)
    assert event == "tightened" and state.level == 1 and state.best == 0.81 and state.peak == 0.90


def test_a_two_image_swing_on_48_images_is_not_a_signal():
    """Issue 23: with 48 validation images (one image = 2 points) the old fixed 5-point
    margin fired on the early plateau. The bound must cover two checks' noise."""
    state = GuardState(0.50, 0, 0, 0.50)
    for _ in range(10):
        state, event = guardrail.observe(state, 0.50 - 5 / 48, margin=0.05, samples=48)  # 5 images fewer
        assert event is None and state.level == 0
    assert guardrail.fall_bound(0.5, 48, 0.05) > 0.2
    # a real collapse on the same slice still counts
    for _ in range(guardrail.CONFIRM):
        state, event = guardrail.observe(state, 0.10, margin=0.05, samples=48)
    assert event == "tightened" and state.level == 1


def test_the_bound_shrinks_with_the_slice_and_never_goes_below_the_margin():
    assert guardrail.fall_bound(0.9, 256, 0.05) < guardrail.fall_bound(0.9, 64, 0.05)
    assert guardrail.fall_bound(0.9, 10**7, 0.05) == 0.05
    assert guardrail.fall_bound(1.0, 8, 0.05) > 0.05  # p clamped: a perfect reference still has noise


def test_a_level_is_given_back_when_accuracy_recovers_near_its_peak():
    state = GuardState(best=0.60, level=2, strikes=0, peak=0.90)
    for i in range(guardrail.CONFIRM - 1):
        state, event = guardrail.observe(state, 0.89, margin=0.05, samples=BIG)
        assert event is None and state.level == 2 and state.recoveries == i + 1
    state, event = guardrail.observe(state, 0.895, margin=0.05, samples=BIG)
    assert event == "relaxed" and state.level == 1 and state.recoveries == 0
    # one low check in between restarts the count
    state, _ = guardrail.observe(state, 0.89, margin=0.05, samples=BIG)
    state, _ = guardrail.observe(state, 0.70, margin=0.05, samples=BIG)
    assert state.recoveries == 0 and state.level == 1


def test_a_dip_shorter_than_confirm_is_forgiven():
    state = GuardState(0.5, 0, 0, 0.5)
    for _ in range(guardrail.CONFIRM - 1):
        state, _ = guardrail.observe(state, 0.3, margin=0.05, samples=BIG)
    state, event = guardrail.observe(state, 0.52, margin=0.05, samples=BIG)
    assert event is None and state.best == 0.52 and state.strikes == 0 and state.level == 0


def test_margin_zero_is_off_and_the_level_is_capped():
    state = GuardState(0.9, 0, 0, 0.9)
    assert guardrail.observe(state, 0.1, margin=0, samples=BIG) == (state, None)
    state = GuardState(0.9, guardrail.MAX_LEVEL, 0, 0.9)
    for _ in range(2 * guardrail.CONFIRM):
        state, event = guardrail.observe(state, 0.1, margin=0.05, samples=BIG)
        assert event is None and state.level == guardrail.MAX_LEVEL


def test_tightened_halves_alpha_per_level_and_never_the_staleness_bound():
    rule = MergeRule("agwu", alpha=0.5, gamma=0.5, s_max=16)
    assert guardrail.tightened(rule, 0) == rule
    assert guardrail.tightened(rule, 2) == MergeRule("agwu", alpha=0.125, gamma=0.5, s_max=16)
    assert guardrail.tightened(MergeRule("agwu", s_max=0), 1).s_max == 0
    sync = MergeRule("sync")
    assert guardrail.tightened(sync, 2) == sync


def test_the_rule_in_force_on_the_push_path_accepts_steady_state_staleness_at_every_level():
    """The path production takes (resolved for the live K, then tightened): at K = 8 the
    steady state is staleness 7; the old guardrail halved the resolved bound 16 -> 4 at level 2
    and refused every such push."""
    for level in range(guardrail.MAX_LEVEL + 1):
        rule = guardrail.rule_in_force(MergeRule("normalized"), level, live=8)
        assert rule.s_max == 16
        scale = rule_step.contribution(rule, staleness=7, q=1.0, live=8)
        assert scale == 1.0 * guardrail.FACTOR ** level / 8
