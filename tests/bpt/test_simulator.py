import pytest

from bpt.plan.simulator import SimConfig, ideal_bound, simulate


def test_ideal_bound_without_and_with_failures_and_joins():
    assert ideal_bound(1000, [100.0, 400.0], {}, {}) == pytest.approx(2.0)
    # node 1 (400/s) dies at t=1: 500 done by then, the rest at 100/s takes 5 s more
    assert ideal_bound(1000, [100.0, 400.0], {}, {1: 1.0}) == pytest.approx(6.0)
    # node 1 joins at t=1: 100 done by then, the other 900 at 500/s
    assert ideal_bound(1000, [100.0, 400.0], {1: 1.0}, {}) == pytest.approx(2.8)


def test_simulation_is_seeded_and_deterministic():
    cfg = SimConfig(nodes=20, samples_per_node=20_000, failures=0.1, seed=3)
    assert simulate(cfg, "idpa") == simulate(cfg, "idpa")


@pytest.mark.parametrize("failures,joins", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.2), (0.1, 0.1)])
def test_idpa_stays_near_the_bound_and_beats_the_baselines(failures, joins):
    """At the subset size bpt train picks for 2 M samples (2048), built as the scheduler
    builds it (idpa.build_policy)."""
    cfg = SimConfig(nodes=40, samples_per_node=50_000, failures=failures, joins=joins, seed=1)
    assert cfg.subset_size == 2048
    static, greedy, idpa = (simulate(cfg, p) for p in ("static", "greedy", "idpa"))
    assert idpa.ratio < 1.05
    assert idpa.ratio < greedy.ratio and idpa.ratio < static.ratio
    if failures:
        assert idpa.reassigned_samples > 0  # the dead nodes' work was handed out again


def test_equal_nodes_make_every_policy_near_ideal():
    cfg = SimConfig(nodes=8, dist="constant", samples_per_node=20_000, overhead=0.0, transfer=0.0, chunk=2000)
    for policy in ("static", "greedy", "idpa"):
        assert simulate(cfg, policy).ratio < 1.03


def test_with_small_subsets_idpa_loses_its_edge_over_the_shared_queue():
    """The regime docs/heterogeneity.md tells users about: at 512-sample subsets IDPA's
    proportional tasks (smaller on slow nodes, each paying the per-task overhead) cost what
    balancing saves, and the shared queue is as good or better."""
    cfg = SimConfig(nodes=40, samples_per_node=50_000, seed=1, chunk=512)
    greedy, idpa = simulate(cfg, "greedy"), simulate(cfg, "idpa")
    assert idpa.ratio >= greedy.ratio - 0.005
    assert idpa.tasks > greedy.tasks


def test_the_simulator_runs_the_schedulers_configuration():
    """One configuration: the policy objects come from idpa.build_policy with the job's subset
    size, as the scheduler task's rounds build them (issue 16)."""
    import inspect

    from bpt.plan import simulator
    from bpt.workers import scheduler

    assert "build_policy(" in inspect.getsource(simulator.simulate)
    assert "build_policy(" in inspect.getsource(scheduler._plan)
    assert "IDPA(" not in inspect.getsource(scheduler) and "IDPA(" not in inspect.getsource(simulator)
