"""The inner layer's task strategy computes the same step as a plain single-thread step."""

import copy

import numpy as np
import pytest
import torch

from bpt.train import inner
from bpt.model import registry as models
from bpt.train import training
from bpt.errors import ConfigError

TOLERANCE = 1e-5  # float32 sums in another order: observed differences are ~1e-7


def one_step(strategy, threads, model, x, y, params, steps=2):
    model = copy.deepcopy(model)
    stepper = inner.make_stepper(strategy, model, params, threads)
    for _ in range(steps):  # two steps, so momentum buffers are exercised too
        stepper.step(x, y)
    return training.state_to_numpy(model)


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("digits-cnn", (1, 8, 8))])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_tasks_step_equals_plain_single_thread_step(name, shape, threads):
    torch.manual_seed(0)
    model = models.build_model(name, shape, 10, seed=0)
    x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
    params = training.TrainParams(batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4)
    plain = one_step("torch", 1, model, x, y, params)
    tasks = one_step("tasks", threads, model, x, y, params)
    for key in plain:
        np.testing.assert_allclose(tasks[key], plain[key], atol=TOLERANCE, rtol=0)
    assert any(not np.allclose(plain[k], training.state_to_numpy(model)[k]) for k in plain)  # it did train


def test_task_stepper_updates_largest_tensor_first():
    model = models.build_model("lenet5", (1, 28, 28), 10)
    stepper = inner.TaskStepper(model, 0.1, 0.0, 0.0, threads=2)
    sizes = [stepper.params[i].numel() for i in stepper.update_order]
    assert sizes == sorted(sizes, reverse=True)


def test_uneven_and_tiny_batches_split_safely():
    model = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
    x, y = torch.randn(3, 1, 8, 8), torch.randint(0, 10, (3,))
    params = training.TrainParams(batch_size=3, lr=0.05, momentum=0.0)
    plain, tasks = one_step("torch", 1, model, x, y, params), one_step("tasks", 4, model, x, y, params)
    for key in plain:
        np.testing.assert_allclose(tasks[key], plain[key], atol=TOLERANCE, rtol=0)


def test_auto_picks_tasks_only_where_it_measured_faster():
    assert inner.resolve("tasks", 32, 1) == "tasks" and inner.resolve("torch", 512, 4) == "torch"
    assert inner.resolve("auto", 32, 2) == "torch"  # small batches: PyTorch's threads win
    assert inner.resolve("auto", 256, 2) == "tasks"
    assert inner.resolve("auto", 256, 1) == "torch"  # one thread: nothing to split
    with pytest.raises(ConfigError, match="unknown inner strategy"):
        inner.resolve("gpu", 32, 2)
