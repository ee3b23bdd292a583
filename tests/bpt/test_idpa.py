import random

import pytest

from bpt.plan.idpa import IDPA, NodeView, Ranges, StaticSplit, WorkQueue


def covered(assignments):
    return sorted(i for a in assignments for i in range(a.start, a.end))


def test_ranges_hand_out_each_index_once_and_given_back_ones_first():
    r = Ranges(100)
    first = r.take(30)
    r.give_back(10, 20)
    again = r.take(15)
    assert first == [(0, 30)] and again == [(10, 20), (30, 35)]
    assert r.remaining == 65


@pytest.mark.parametrize("policy", [IDPA(), StaticSplit(100), WorkQueue(100)], ids=lambda p: p.name)
def test_every_sample_assigned_exactly_once_per_epoch(policy):
    rng = random.Random(0)
    ranges, queued, out = Ranges(10_007), {f"n{i}": 0 for i in range(5)}, []
    rates = {name: None for name in queued}
    while ranges.remaining:
        views = [NodeView(n, rates[n], queued[n]) for n in queued]
        got = policy.assign(ranges, views)
        out += got
        for a in got:
            queued[a.node] += a.size
        for n in queued:  # nodes finish their queue at random; rates become known
            queued[n] = 0 if rng.random() < 0.5 else queued[n]
            rates[n] = rates[n] or rng.uniform(100, 1000)
    assert covered(out) == list(range(10_007))


def test_idpa_probes_equally_then_sizes_by_throughput():
    idpa, ranges = IDPA(probe_fraction=0.05, horizon=1.0, min_chunk=1), Ranges(100_000)
    probe = idpa.assign(ranges, [NodeView("fast", None, 0), NodeView("slow", None, 0)])
    assert [a.size for a in probe] == [2500, 2500]  # 5% of the epoch, split equally
    later = idpa.assign(ranges, [NodeView("fast", 3000.0, 0), NodeView("slow", 1000.0, 0)])
    sizes = {a.node: a.size for a in later}
    assert sizes == {"fast": 3000, "slow": 1000}  # proportional to measured throughput


def test_idpa_shrinks_the_horizon_so_nodes_finish_together():
    idpa, ranges = IDPA(horizon=10.0, min_chunk=1), Ranges(4000)
    idpa.probe_size = 1
    got = idpa.assign(ranges, [NodeView("a", 300.0, 0), NodeView("b", 100.0, 0)])
    sizes = {a.node: a.size for a in got}
    assert sizes == {"a": 3000, "b": 1000}  # 10 s of work exceeds the epoch: split 3:1


def test_idpa_gives_nothing_to_a_node_with_enough_queued():
    idpa, ranges = IDPA(horizon=1.0, min_chunk=10), Ranges(100_000)
    idpa.probe_size = 10
    assert idpa.assign(ranges, [NodeView("a", 1000.0, 995)]) == []


def test_idpa_refills_a_node_in_one_piece_once_half_its_work_is_done():
    idpa, ranges = IDPA(horizon=1.0, min_chunk=10), Ranges(100_000)
    idpa.probe_size = 10
    assert idpa.assign(ranges, [NodeView("a", 1000.0, 600)]) == []  # more than half left: wait
    assert [a.size for a in idpa.assign(ranges, [NodeView("a", 1000.0, 500)])] == [500]


def test_a_range_held_by_a_worker_never_measured_moves_too():
    """Finding 4 of issue 15: a live worker that never completed a task has no rate, and its
    range was never moved: the epoch waited forever."""
    from bpt.plan.idpa import MIN_OVERDUE, UNMEASURED_OVERDUE, overdue

    assert overdue(5.0, 256, rate=1000.0, slowest=1000.0) is None
    assert "predicted" in overdue(MIN_OVERDUE + 1, 256, rate=1000.0, slowest=1000.0)
    assert overdue(MIN_OVERDUE + 1, 256, rate=None, slowest=1000.0) is not None  # judged by the slowest measured
    assert overdue(UNMEASURED_OVERDUE - 1, 256, rate=None, slowest=None) is None
    assert "without the worker ever completing" in overdue(UNMEASURED_OVERDUE + 1, 256, rate=None, slowest=None)
