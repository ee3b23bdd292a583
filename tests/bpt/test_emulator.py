"""The emulator: real training code and the store's merge code on a virtual clock."""

import numpy as np
import pytest

from bpt.plan import baselines
from bpt.plan import emulator
from bpt.train import inner
from bpt.train import merge, rule_step
from bpt.model import registry as models
from bpt.plan import partition
from bpt.train import training
from bpt.train.merge import MergeRule


def test_one_worker_with_full_steps_is_one_plain_process(digits, job):
    """K = 1 under plain async with alpha 1 applies every delta whole: the global weights must
    be what one process gets training the same subsets in the same order with the same seeds,
    at the job's lr schedule by samples trained (the default: cosine)."""
    from bpt.train.schedule import lr_factor

    data, initial = digits
    spec = job(data, epochs=2, rule=MergeRule("async"))
    curve = emulator.emulate(spec, emulator.Cluster(workers=1), data, initial, eval_every=10**9)

    model = models.build_model("digits-cnn", data.input_shape, 10)
    training.load_numpy_state(model, initial)
    stepper = inner.make_stepper("torch", model, spec.train, threads=1)
    subsets = partition.subsets(len(data.x_train), 128)
    trained = 0
    for epoch in range(2):
        for s in partition.waves(len(subsets), epoch, 0, None)[0]:
            a, b = subsets[s]
            stepper.set_lr(spec.train.lr * lr_factor(spec.train.lr_schedule, trained / (2 * len(data.x_train)), 2))
            training.train_pass(stepper, data.x_train[a:b], data.y_train[a:b], 32, seed=7919 * epoch + a)
            trained += b - a
    _, expected = training.evaluate(model, data.x_test, data.y_test)
    assert curve.versions == 2 * len(subsets) and curve.staleness == {0: 2 * len(subsets)}
    assert curve.final_accuracy == pytest.approx(expected, abs=1 / len(data.x_test))


def test_asynchronous_adasum_is_plain_async_without_staleness_and_differs_with_it(digits, job):
    """One worker's pushes have no update since their pull, so Adasum adds each delta whole;
    at 4 workers every stale push is combined with what was applied since its pull."""
    data, initial = digits
    for workers, same in ((1, True), (4, False)):
        runs = [emulator.emulate(job(data, epochs=1, rule=MergeRule("async"), adasum=on), emulator.Cluster(workers=workers),
                                 data, initial, eval_every=10**9) for on in (False, True)]
        assert (runs[0].accuracy == runs[1].accuracy) is same
        assert runs[0].staleness == runs[1].staleness  # the same pushes, in the same order


def test_pushes_go_through_the_stores_merge_function_with_the_live_count(digits, monkeypatch, job):
    data, initial = digits
    seen = []
    real = rule_step.step

    def spy(rule, state, push):
        seen.append((push.staleness, push.live))
        return real(rule, state, push)

    monkeypatch.setattr(rule_step, "step", spy)
    curve = emulator.emulate(job(data, epochs=1), emulator.Cluster(workers=4), data, initial)
    assert len(seen) == curve.versions + curve.rejected == len(partition.subsets(len(data.x_train), 128))
    assert {live for _, live in seen} == {4}


def test_homogeneous_staleness_is_k_minus_one_in_steady_state(digits, job):
    data, initial = digits
    curve = emulator.emulate(job(data, epochs=2), emulator.Cluster(workers=4), data, initial)
    steady = max(curve.staleness, key=curve.staleness.get)
    assert steady == 3 and curve.rejected == 0


def test_a_dead_workers_subset_is_trained_again_and_joins_take_work(digits, job):
    data, initial = digits
    n = len(data.x_train)
    curve = emulator.emulate(job(data, epochs=2), emulator.Cluster(workers=4, failures=0.25, joins=0.25, seed=1),
                             data, initial)
    assert curve.samples[-1] == 2 * n  # every sample of both epochs pushed once
    assert sum(curve.staleness.values()) + curve.rejected == 2 * len(partition.subsets(n, 128))


def test_lognormal_rates_are_seeded_and_change_the_timeline(digits, job):
    data, initial = digits
    a = emulator.emulate(job(data), emulator.Cluster(workers=3, sigma=0.5, seed=2), data, initial)
    b = emulator.emulate(job(data), emulator.Cluster(workers=3, sigma=0.5, seed=2), data, initial)
    c = emulator.emulate(job(data), emulator.Cluster(workers=3, seed=2), data, initial)
    assert a.accuracy == b.accuracy and a.staleness == b.staleness
    assert a.virtual_seconds != c.virtual_seconds


def test_normalized_learns_at_eight_workers_where_the_papers_agwu_stalls(digits, job):
    """The measured reason for the default (docs/scaling.md), at a size a unit test affords."""
    data, initial = digits
    cluster = emulator.Cluster(workers=8)
    norm = emulator.emulate(job(data, epochs=12), cluster, data, initial)
    agwu = emulator.emulate(job(data, epochs=12, rule=MergeRule("agwu", alpha=0.5)), cluster, data, initial)
    assert norm.final_accuracy >= 0.85
    assert norm.final_accuracy > agwu.final_accuracy + 0.2


def test_buffered_aggregation_applies_one_version_per_k_pushes(digits, job):
    data, initial = digits
    curve = emulator.emulate(job(data, buffer=emulator.Buffered()), emulator.Cluster(workers=4), data, initial)
    pushes = 4 * len(partition.subsets(len(data.x_train), 128))  # 4 epochs
    assert curve.versions == pushes // 4
    assert np.isfinite(curve.final_accuracy)


def test_semi_synchronous_rounds_on_an_even_cluster_are_local_sgd_rounds(digits, job):
    """Every worker waits for the round's flush, so every push is computed from the newest
    weights (staleness 0) and every version averages all K pushes, as a synchronous round."""
    data, initial = digits
    cluster = emulator.Cluster(workers=4, overhead=0.01, merge=0.002)
    curve = emulator.emulate(job(data, epochs=10, buffer=emulator.Buffered(barrier=True)), cluster, data, initial)
    rounds = baselines.local_sgd(job(data, epochs=10), cluster, data, initial)
    pushes = 10 * len(partition.subsets(len(data.x_train), 128))
    assert curve.staleness == {0: pushes}
    assert curve.versions == -(-pushes // 4)  # the last round may be short
    assert curve.final_accuracy >= 0.85
    assert abs(curve.final_accuracy - rounds.final_accuracy) <= 0.05


def test_a_slow_worker_does_not_hold_semi_synchronous_rounds(digits, job):
    """One worker 3x slower: rounds close without it after the deadline, its pushes join a
    later round (staleness >= 1), and the run takes far less virtual time than rounds that
    wait for it (local SGD)."""
    data, initial = digits
    cluster = emulator.Cluster(workers=4, overhead=0.01, merge=0.002, slowdowns=(1, 1, 1, 3))
    semi = emulator.emulate(job(data, epochs=10, buffer=emulator.Buffered(barrier=True)), cluster, data, initial)
    rounds = baselines.local_sgd(job(data, epochs=10), cluster, data, initial)
    pushes = 10 * len(partition.subsets(len(data.x_train), 128))
    assert sum(semi.staleness.values()) == pushes
    assert sum(n for s, n in semi.staleness.items() if s >= 1) >= pushes // 10  # the slow one's, ~1 in 7 here
    assert semi.virtual_seconds < 0.7 * rounds.virtual_seconds  # 0.60 here
    assert semi.final_accuracy >= 0.85


def test_semi_synchronous_rounds_go_on_when_workers_die_and_join(digits, job):
    """A round must not wait for a worker that died: every subset is still pushed (a dead
    worker's is trained again), so the run ends instead of waiting for a push that never comes."""
    data, initial = digits
    pushes = 4 * len(partition.subsets(len(data.x_train), 128))
    for seed in (0, 2):
        cluster = emulator.Cluster(workers=4, overhead=0.01, merge=0.002, failures=0.5, joins=0.25, seed=seed)
        curve = emulator.emulate(job(data, buffer=emulator.Buffered(barrier=True)), cluster, data, initial)
        assert sum(curve.staleness.values()) == pushes
        assert curve.samples[-1] == 4 * len(data.x_train)
