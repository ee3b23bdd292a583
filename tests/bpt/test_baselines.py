"""The time-to-accuracy clock: DDP and local SGD baselines, the emulator's serial store and
slow workers, and the benchmark's --quick run (real Fashion-MNIST where the file is)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from bpt.plan import baselines
from bpt.plan import emulator
from bpt.train.merge import MergeRule


def test_ddp_takes_k_times_fewer_steps_each_waiting_for_the_slowest_replica_plus_the_ring(digits, job):
    data, initial = digits
    n = len(data.x_train)
    one = baselines.ddp(job(data, epochs=4), emulator.Cluster(workers=1, rate=1000.0), data, initial, lr=0.05,
                        warmup_samples=0, eval_every=10**9)
    four = baselines.ddp(job(data, epochs=4), emulator.Cluster(workers=4, rate=1000.0, slowdowns=(1, 1, 1, 2)), data,
                         initial, lr=0.2, warmup_samples=1000, eval_every=10**9)
    assert one.versions == 4 * (n // 32) and four.versions == 4 * (n // 128)
    ring = baselines.Ring().seconds(4, baselines.model_bytes(initial))
    assert four.virtual_seconds == pytest.approx(four.versions * (2 * 32 / 1000.0 + ring))
    assert one.final_accuracy > 0.8 and four.final_accuracy > 0.5


def test_the_ring_all_reduce_costs_nothing_alone_and_grows_with_bytes_and_hops():
    ring = baselines.Ring(bandwidth=1e9, latency=1e-5)
    assert ring.seconds(1, 10**6) == 0
    assert ring.seconds(2, 10**6) == pytest.approx(1e-3 + 2e-5)
    assert ring.seconds(64, 10**6) > ring.seconds(4, 10**6)


def test_local_sgd_rounds_wait_for_the_slowest_worker_and_learn(digits, job):
    data, initial = digits
    spec = job(data, epochs=3)
    equal = baselines.local_sgd(spec, emulator.Cluster(workers=2, rate=1000.0, overhead=0.0), data, initial,
                                eval_every=10**9)
    slow = baselines.local_sgd(spec, emulator.Cluster(workers=2, rate=1000.0, overhead=0.0, slowdowns=(1, 3)), data,
                               initial, eval_every=10**9)
    assert slow.final_accuracy == equal.final_accuracy  # synchronous: the same arithmetic, later
    assert slow.virtual_seconds > 2.5 * equal.virtual_seconds - 1e-9
    assert equal.final_accuracy > 0.8


def test_sized_rounds_are_local_sgd_on_equal_workers_and_size_a_slow_workers_piece_by_its_speed(digits, job):
    """Pieces sized by throughput: on equal workers exactly local SGD's rounds; with one
    worker 3x slower it trains a third of a subset, every round takes a fast worker's task,
    and every sample of every epoch is still trained once."""
    data, initial = digits
    n = len(data.x_train) // 128 * 128  # whole subsets: local SGD's and the sized pieces coincide
    data = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
    spec = job(data, epochs=2)
    equal = emulator.Cluster(workers=2, rate=1000.0, overhead=0.01)
    plain = baselines.local_sgd(spec, equal, data, initial, eval_every=10**9, commit=0.002)
    sized = baselines.local_sgd(spec, equal, data, initial, eval_every=10**9, commit=0.002, sized=True)
    assert sized.final_accuracy == plain.final_accuracy and sized.virtual_seconds == plain.virtual_seconds
    assert plain.virtual_seconds == pytest.approx(plain.versions * (0.128 + 0.01 + 0.002 + baselines.Ring().seconds(
        2, baselines.model_bytes(initial))))
    slow = baselines.local_sgd(spec, dataclasses.replace(equal, slowdowns=(1, 3)), data, initial, eval_every=10**9,
                               sized=True)
    rounds = -(-2 * n // (128 + 43))  # a fast worker's 128 and the slow one's 43 a round
    assert slow.versions == rounds and slow.samples[-1] == 2 * n
    # the slow worker's 43 samples take 0.129 s: a round is about a fast task, not three
    assert slow.virtual_seconds <= rounds * (43 * 3 / 1000 + 0.01 + baselines.Ring().seconds(
        2, baselines.model_bytes(initial))) + 1e-9
    assert slow.final_accuracy > 0.5  # learns in 15 rounds (chance: 0.1)


def test_sized_pieces_cover_every_epoch_once_with_sizes_by_throughput(digits, job):
    data, _ = digits
    spec = job(data, epochs=3)
    n = len(data.x_train)  # not a whole number of subsets: pieces cross their ends
    rounds = list(baselines._round_pieces(spec, n, [1000.0, 1000.0, 1000.0 / 3], sized=True))
    trained = np.concatenate([rows for pieces in rounds for _, rows, _ in pieces])  # in the order trained
    for epoch in range(3):
        assert sorted(trained[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))  # every sample once an epoch
    assert [len(rows) for _, rows, _ in rounds[0]] == [128, 128, 43]
    assert all(weight == len(rows) for pieces in rounds for _, rows, weight in pieces)


def test_the_emulated_store_merges_one_push_at_a_time(digits, job):
    """With a merge slower than a task, pushes queue at the store: the run takes at least
    one merge time per applied version, and the store is busy nearly all the time."""
    data, initial = digits
    curve = emulator.emulate(job(data, epochs=1, rule=MergeRule("normalized")),
                             emulator.Cluster(workers=4, rate=10**6, overhead=0.0, merge=0.5), data, initial,
                             eval_every=10**9)
    assert curve.virtual_seconds >= 0.5 * (curve.versions + curve.rejected) - 1e-9
    assert curve.store_utilisation > 0.95
    assert max(curve.staleness) >= 3  # workers kept pulling while pushes waited


def test_a_slow_worker_pushes_less_often_and_staler(digits, job):
    data, initial = digits
    spec = job(data, epochs=2, rule=MergeRule("normalized"))
    curve = emulator.emulate(spec, emulator.Cluster(workers=3, slowdowns=(1, 1, 3)), data, initial)
    assert max(curve.staleness) >= 3  # the slow one's pushes land after several of the others'
    with pytest.raises(ValueError, match="slowdowns"):
        emulator.emulate(spec, emulator.Cluster(workers=3, slowdowns=(1, 3)), data, initial)


FASHION = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "datasets", "fashion-mnist.npz")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(FASHION), reason="the shared Fashion-MNIST file is not beside the checkout")
def test_the_time_to_accuracy_benchmark_runs_every_system_quickly_on_real_data():
    from benchmarks import time_to_accuracy
    from benchmarks.common import RESULTS

    assert time_to_accuracy.main(["--quick", "--data", FASHION, "--out", "tta_test"]) == 0
    with open(os.path.join(RESULTS, "tta_test_quick.json")) as f:
        result = json.load(f)
    systems = {(r["system"], r["workers"], r["cluster"]) for r in result["summary"]}
    assert {s for s, _, _ in systems} == {s for s in time_to_accuracy.GRIDS if "@" not in s}
    assert ("ddp", 4, "slow") in systems and ("bpt normalized", 4, "slow") in systems
    one = next(r for r in result["summary"] if r["system"] == "one process")
    assert one["reached"] == "1/1" and one["speedup"] == 1.0
    assert all(r["final"] > 0.5 for r in result["summary"])  # every system learned
    assert result["costs"]["merge_seconds"] and all(c[0] <= 6000 * 3 for r in result["rows"] for c in r["curve"])
