"""How many workers help: the gradient noise scale from what each task measures (issue 25)."""

import numpy as np
import pytest
import torch

from bpt.data import datasets
from bpt.train import inner
from bpt.job import metrics
from bpt.model import registry as models
from bpt.train import noise_scale
from bpt.train import training
from bpt.train.noise_scale import GradStats


def test_the_two_batch_estimator_recovers_a_known_noise_scale():
    rng = np.random.default_rng(0)
    dim, b, n_b = 2000, 32, 8
    G = rng.normal(size=dim) * 0.05  # |G|^2 about 5
    trace = 400.0  # per-example covariance trace: B_noise = 80 samples
    small, big = [], []
    for _ in range(400):
        batches = G + rng.normal(size=(n_b, dim)) * np.sqrt(trace / dim / b)
        small.append(np.mean(np.sum(batches ** 2, axis=1)))
        big.append(np.sum(batches.mean(axis=0) ** 2))
    found = noise_scale.estimate(np.mean(small), np.mean(big), b, b * n_b, step_batch=b)
    assert found.noise_batch == pytest.approx(trace / float(G @ G), rel=0.2)
    assert found.workers == round(found.noise_batch / b)  # workers stepping on batches of b
    assert "beyond about" in found.message()


def test_no_estimate_without_two_batch_sizes_or_with_noise_that_swamps_the_signal():
    assert noise_scale.estimate(1.0, 0.5, 32, 32) is None
    assert noise_scale.estimate(1.0, 1.5, 32, 256) is None  # |mean g| above the batches' own: no trace
    assert noise_scale.from_sums({}) is None


def test_summed_statistics_give_the_mean_estimate_and_the_job_warns_past_it():
    sums = {"pushes": 2, "small": 2 * 10.0, "big": 2 * 6.0, "batch": 2 * 16, "big_batch": 2 * 32}
    found = noise_scale.from_sums(sums)  # halves of 16, workers stepping on batches of 32
    assert found == noise_scale.estimate(10.0, 6.0, 16, 32)
    assert found.workers == max(1, round(found.noise_batch / 32))
    many = metrics.scaling({"workers": 64}, {}, sums)
    assert many["noise_scale"]["workers_that_help"] == found.workers < 64
    assert "more workers add samples, not speed" in many["scaling_warning"]
    assert metrics.scaling({"workers": 1}, {}, sums)["scaling_warning"] is None


def epoch_sums(epoch: int, pushes: int, small: float, big: float) -> dict:
    return {f"pushes:{epoch}": pushes, f"small:{epoch}": pushes * small, f"big:{epoch}": pushes * big,
            f"batch:{epoch}": pushes * 16, f"big_batch:{epoch}": pushes * 32}


def test_the_estimate_is_the_latest_epochs_where_the_noise_scale_has_grown():
    """The noise scale grows as training goes on: a whole-job average would be held down by
    the first epoch's large gradients (Fashion-MNIST: 76 samples over 2 epochs against 274
    in the second alone), so the estimate is the latest epochs' with LATEST_PUSHES pushes."""
    early = (10.0, 6.0)  # B_noise 64 in the first epoch (|G|^2 = 2, tr(S) = 128), 192 in the second
    sums = {**epoch_sums(0, 20, *early), **epoch_sums(1, 20, 1.3, 0.7)}
    assert noise_scale.from_sums(sums) == noise_scale.estimate(1.3, 0.7, 16, 32)
    assert noise_scale.from_sums(sums).noise_batch > 2 * noise_scale.estimate(*early, 16, 32).noise_batch
    few = {**epoch_sums(0, 20, *early), **epoch_sums(1, 4, 1.3, 0.7)}  # too few pushes in the latest: one more epoch
    assert noise_scale.latest_sums(few)["pushes"] == 24
    swamped = {**epoch_sums(0, 20, *early), **epoch_sums(1, 20, 1.0, 1.5)}  # no estimate from it alone
    assert noise_scale.from_sums(swamped) is not None and noise_scale.latest_sums(swamped)["pushes"] == 40
    assert noise_scale.from_sums(epoch_sums(3, 1, 1.0, 1.5)) is None
    assert metrics.scaling({"workers": 4}, {}, sums)["noise_scale"]["pushes_measured"] == 20


def test_an_epoch_with_fewer_subsets_than_workers_is_a_submit_warning():
    assert "3 subsets for 4 training processes" in noise_scale.too_few_subsets(3, 4)
    assert noise_scale.too_few_subsets(4, 4) is None


def test_what_tasks_measure_along_their_training_is_within_2x_of_one_process_at_fixed_weights():
    """Acceptance of issue 25: the estimate from the workers' statistics (halves of every
    fourth batch of 32, as tasks train) against the two-batch estimate of one process
    at each task's starting weights (batches of 32 against the whole training split), summed
    over the same 3 epochs of 256-sample tasks."""
    torch.manual_seed(0)
    data = datasets.digits(seed=0)
    model = models.build_model("digits-cnn", data.input_shape, 10, seed=0)
    stepper = inner.make_stepper("torch", model, training.TrainParams(32, 0.05, 0.9, lr_schedule="constant"),
                                 threads=1)
    training.train_pass(stepper, data.x_train, data.y_train, 32, seed=1)  # past the first steps
    n = len(data.x_train) // 32 * 32

    def grad(x, y):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    fixed = {"pushes": 0, "small": 0.0, "big": 0.0, "batch": 0, "big_batch": 0}
    measured = dict(fixed)
    for epoch in range(3):
        for start in range(0, n - 255, 256):
            full = grad(data.x_train[:n], data.y_train[:n])
            small = np.mean([float(g @ g) for g in (grad(data.x_train[i:i + 32], data.y_train[i:i + 32])
                                                     for i in range(0, n, 32))])
            for key, value in (("pushes", 1), ("small", small), ("big", float(full @ full)), ("batch", 32),
                               ("big_batch", n)):
                fixed[key] += value
            meter = training.GradientMeter(32)  # then the task trains, as a worker's does
            training.train_pass(stepper, data.x_train[start:start + 256], data.y_train[start:start + 256], 32,
                                seed=7919 * epoch + start, meter=meter)
            stats = meter.result()
            for key, value in (("pushes", 1), ("small", stats.small), ("big", stats.big), ("batch", stats.batch),
                               ("big_batch", stats.batch * stats.batches)):
                measured[key] += value
    one, tasks = noise_scale.from_sums(fixed), noise_scale.from_sums(measured)
    assert one is not None and tasks is not None
    print(f"noise scale: tasks {tasks.noise_batch:.1f}, one process at fixed weights {one.noise_batch:.1f}")
    assert 0.5 <= tasks.noise_batch / one.noise_batch <= 2.0, (tasks, one)


def test_the_meter_measures_every_fourth_full_batch_only():
    model = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
    stepper = inner.make_stepper("torch", model, training.TrainParams(), threads=1)
    x, y = np.zeros((70, 1, 8, 8), np.float32), np.zeros(70, np.int64)
    meter = training.GradientMeter(32)
    training.train_pass(stepper, x, y, 32, seed=0, meter=meter)
    assert meter.pairs == 1 and isinstance(meter.result(), GradStats) and stepper.meter is None
    assert meter.result().batch == 16 and meter.result().batches == 2  # the halves of the first batch
    one = training.GradientMeter(32)
    training.train_pass(stepper, x[:20], y[:20], 32, seed=0, meter=one)  # no full batch
    assert one.result() is None


def test_a_measured_step_trains_exactly_as_a_plain_one():
    """The batch's gradient as the mean of its halves' is the same gradient: two models from
    the same weights, one step each, one of them measured, end with the same weights."""
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 10, (32,))
    a = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
    b = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
    plain = inner.make_stepper("torch", a, training.TrainParams(32, 0.1, 0.9), threads=1)
    measured = inner.make_stepper("torch", b, training.TrainParams(32, 0.1, 0.9), threads=1)
    measured.meter = training.GradientMeter(32)
    assert plain.step(x, y) == pytest.approx(measured.step(x, y), rel=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_workers_that_help_never_exceed_the_batches_that_hold_the_training_set():
    """A model that fits its training data measures a noise scale of any size (a 432-image
    folder: 158,668 samples); more workers than n_train / batch cannot make a larger batch."""
    sums = {"pushes": 2, "small": 2 * 10.0, "big": 2 * 5.001, "batch": 2 * 16, "big_batch": 2 * 32}  # about noise alone
    found = noise_scale.from_sums(sums)
    assert found.workers > 1000  # B_noise runs away when the signal is tiny
    capped = metrics.scaling({"workers": 20, "n_train": 432}, {}, sums)
    assert capped["noise_scale"]["workers_that_help"] == 432 // 32
    assert capped["noise_scale"]["capped_at_training_set"] is True
    assert ("beyond about 13 workers (at most: their batches hold the 432 training samples)"
            in capped["scaling_warning"])
    assert metrics.scaling({"workers": 13, "n_train": 432}, {}, sums)["scaling_warning"] is None
    plain = metrics.scaling({"workers": 4, "n_train": 10**6}, {}, sums)["noise_scale"]
    assert plain["workers_that_help"] == found.workers and plain["capped_at_training_set"] is False
