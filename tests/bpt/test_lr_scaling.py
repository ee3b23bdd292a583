"""The default recipe's learning rate: the model's own, scaled by sqrt(K) under the rules that
merge K deltas as one step (issue 23)."""

import pytest

from bpt import models
from bpt.datasets import DatasetSpec
from bpt.prepare import JobChoices, prepare
from bpt.schedule import lr_scale


def test_sqrt_scaling_applies_to_the_averaging_rules_only():
    assert lr_scale("sqrt", "normalized", 16) == 4.0
    assert lr_scale("sqrt", "normalized", 64) == 4.0  # capped: x8 diverged at K = 64
    assert lr_scale("sqrt", "sync", 4) == 2.0
    assert lr_scale("sqrt", "agwu", 16) == lr_scale("sqrt", "async", 16) == 1.0
    assert lr_scale("none", "normalized", 16) == lr_scale("sqrt", "normalized", 1) == 1.0


def test_a_task_trains_at_the_schedule_times_sqrt_of_the_live_k_and_sync_uses_its_round_size():
    spec, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, workers=2))
    assert spec.train.lr == models.default_lr("digits-cnn") == 0.05 and spec.train.lr_schedule == "cosine"
    first = spec.lr_at(0, 0, live=1)
    assert spec.lr_at(0, 0, live=9) == pytest.approx(3 * first)
    sync, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, workers=4, rule="sync"))
    assert sync.lr_at(0, 0, live=1) == pytest.approx(2 * sync.train.lr)  # rounds of 4 deltas
    agwu, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, rule="agwu"))
    assert agwu.lr_at(0, 0, live=9) == agwu.lr_at(0, 0, live=1)
    off, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, lr_scaling="none"))
    assert off.lr_at(0, 0, live=9) == off.lr_at(0, 0, live=1)


def test_lenet5_defaults_to_the_rate_measured_on_fashion_mnist_and_a_given_lr_wins():
    assert models.default_lr("lenet5") == 0.02 and models.default_lr("my-model-file") == models.DEFAULT_LR
    spec, _, _ = prepare(JobChoices(DatasetSpec("synthetic", samples=200, size=28), epochs=1))
    assert spec.model == "lenet5" and spec.train.lr == 0.02
    given, _, _ = prepare(JobChoices(DatasetSpec("synthetic", samples=200, size=28), epochs=1, lr=0.1))
    assert given.train.lr == 0.1 and given.lr_at(0, 0, live=4) == pytest.approx(0.2)  # cosine starts at 1
