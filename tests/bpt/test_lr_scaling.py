"""The default recipe's learning rate: the model's own, scaled by sqrt(K) under the rules that
merge K deltas as one step (issue 23)."""

import pytest

from bpt.model import registry as models
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.train.schedule import lr_scale


def test_sqrt_scaling_applies_to_the_averaging_rules_only():
    assert lr_scale("sqrt", "normalized", 16) == 4.0
    assert lr_scale("sqrt", "normalized", 64) == 4.0  # capped: x8 diverged at K = 64
    assert lr_scale("sqrt", "sync", 4) == 2.0
    assert lr_scale("sqrt", "agwu", 16) == lr_scale("sqrt", "async", 16) == 1.0
    assert lr_scale("none", "normalized", 16) == lr_scale("sqrt", "normalized", 1) == 1.0


def test_a_task_trains_at_the_schedule_times_sqrt_of_the_live_k_and_sync_uses_its_round_size():
    spec, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, workers=2, lr_scaling="sqrt"))
    assert spec.train.lr == models.default_lr("digits-cnn") == 0.05
    first = spec.lr_at(0, 0, live=1)
    assert spec.lr_at(0, 0, live=9) == pytest.approx(3 * first)
    sync, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, workers=4, rule="sync", lr_scaling="sqrt"))
    assert sync.lr_at(0, 0, live=1) == pytest.approx(2 * sync.train.lr)  # rounds of 4 deltas
    agwu, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, rule="agwu", lr_scaling="sqrt"))
    assert agwu.lr_at(0, 0, live=9) == agwu.lr_at(0, 0, live=1)
    off, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=4, lr_scaling="none"))
    assert off.lr_at(0, 0, live=9) == off.lr_at(0, 0, live=1)


def test_lenet5_defaults_to_the_recipe_measured_on_fashion_mnist_the_others_keep_theirs_and_a_given_lr_wins():
    assert models.default_recipe("lenet5") == (0.02, "cosine", "sqrt")
    assert models.default_recipe("digits-cnn") == models.default_recipe("my-model-file") == (0.05, "constant", "none")
    spec, _, _ = prepare(JobChoices(DatasetSpec("synthetic", samples=200, size=28), epochs=1))
    assert spec.model == "lenet5" and (spec.train.lr, spec.train.lr_schedule, spec.train.lr_scaling) == \
        (0.02, "cosine", "sqrt")
    digits, _, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=1))
    assert (digits.train.lr, digits.train.lr_schedule, digits.train.lr_scaling) == (0.05, "constant", "none")
    given, _, _ = prepare(JobChoices(DatasetSpec("synthetic", samples=200, size=28), epochs=1, lr=0.1))
    assert given.train.lr == 0.1 and given.lr_at(0, 0, live=4) == pytest.approx(0.2)  # cosine starts at 1
