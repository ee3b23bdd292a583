from bpt import guardrail
from bpt.guardrail import GuardState
from bpt.merge import MergeRule


def test_a_fall_beyond_the_margin_at_confirm_checks_in_a_row_tightens_one_level():
    state, hit = guardrail.observe(GuardState(), 0.90, margin=0.05)
    assert not hit and state == GuardState(0.90, 0)
    state, hit = guardrail.observe(state, 0.86, margin=0.05)  # within the margin
    assert not hit and state == GuardState(0.90, 0)
    for strike in range(1, guardrail.CONFIRM):  # low checks short of CONFIRM: strikes only
        state, hit = guardrail.observe(state, 0.80, margin=0.05)
        assert not hit and state == GuardState(0.90, 0, strikes=strike)
    state, hit = guardrail.observe(state, 0.81, margin=0.05)
    assert hit and state == GuardState(0.81, 1)  # the best restarts from the fallen value
    state, hit = guardrail.observe(state, 0.77, margin=0.05)  # measured from the new best
    assert not hit and state.level == 1


def test_a_dip_shorter_than_confirm_is_forgiven():
    state = GuardState(0.5, 0)
    for _ in range(guardrail.CONFIRM - 1):
        state, _ = guardrail.observe(state, 0.3, margin=0.05)
    state, hit = guardrail.observe(state, 0.52, margin=0.05)
    assert not hit and state == GuardState(0.52, 0, strikes=0)


def test_margin_zero_is_off_and_the_level_is_capped():
    state = GuardState(0.9, 0)
    assert guardrail.observe(state, 0.1, margin=0) == (GuardState(0.9, 0), False)
    state = GuardState(0.9, guardrail.MAX_LEVEL)
    assert guardrail.observe(state, 0.1, margin=0.05)[1] is False


def test_tightened_halves_alpha_and_s_max_per_level_but_leaves_sync_alone():
    rule = MergeRule("agwu", alpha=0.5, gamma=0.5, s_max=16)
    assert guardrail.tightened(rule, 0) == rule
    assert guardrail.tightened(rule, 2) == MergeRule("agwu", alpha=0.125, gamma=0.5, s_max=4)
    assert guardrail.tightened(MergeRule("agwu", s_max=1), 3).s_max == 1
    sync = MergeRule("sync")
    assert guardrail.tightened(sync, 2) == sync


def test_tightened_keeps_a_live_bound_live_and_a_zero_bound_zero():
    live = guardrail.tightened(MergeRule("normalized", alpha=1.0), 2)
    assert live.s_max is None and live.alpha == 0.25
    assert guardrail.tightened(MergeRule("agwu", s_max=0), 1).s_max == 0  # was turned into 1
