"""The training recipe: optimizers, schedules over the job's progress, label smoothing,
augmentation, top-k (bpt.train.training, bpt.train.schedule, bpt.job.jobspec)."""

import dataclasses

import numpy as np
import pytest
import torch

from bpt.train import inner
from bpt.model import registry as models
from bpt.train import schedule
from bpt.train import training
from bpt.errors import ConfigError
from bpt.job.jobspec import JobSpec
from bpt.train.training import TrainParams


def test_cosine_falls_from_the_rate_to_zero_after_the_warm_up():
    f = lambda p: schedule.lr_factor("cosine", p, epochs=10, warmup_epochs=1)  # noqa: E731
    assert f(0.0) == schedule.WARMUP_FLOOR and f(0.05) == pytest.approx(0.5)
    assert f(0.1) == pytest.approx(1.0) and f(0.55) == pytest.approx(0.5) and f(1.0) == pytest.approx(0.0)
    assert all(f(a) >= f(b) for a, b in zip(np.linspace(0.1, 1, 20), np.linspace(0.1, 1, 20)[1:]))


def test_step_divides_by_ten_every_step_every_epochs():
    assert [schedule.lr_factor("step", e / 9, 9, step_every=3) for e in (0, 2.9, 3, 6, 9)] == \
        pytest.approx([1, 1, 0.1, 0.01, 0.001])
    assert schedule.lr_factor("constant", 0.7, 9) == 1.0


def test_the_rate_follows_the_jobs_progress_not_the_tasks():
    spec = JobSpec("j", "d", "digits-cnn", (1, 8, 8), 10, 1280, epochs=4, subset_size=128,
                   train=TrainParams(lr=0.1, lr_schedule="cosine"))
    assert spec.n_subsets == 10
    assert spec.lr_at(0, 0) == pytest.approx(0.1)
    assert spec.lr_at(2, 20) == pytest.approx(0.05)  # half-way through the job: half the rate
    assert spec.lr_at(3, 40) == pytest.approx(0.0, abs=1e-12)
    ranges = dataclasses.replace(spec, partition="idpa")
    assert ranges.progress(1, 999, start=640) == pytest.approx(1.5 / 4)  # ranges: by their first row
    rounds = dataclasses.replace(spec, rule=dataclasses.replace(spec.rule, kind="sync"), workers=2)
    n_waves = len(rounds.waves(2))
    assert n_waves == 5 and rounds.progress(2, 0, wave=2) == pytest.approx((2 + 2 / 5) / 4)  # sync: by its wave
    assert ranges.lr_at(0, 0, start=0) == pytest.approx(0.1)  # a warm-up-free cosine starts at the rate


@pytest.mark.parametrize("bad, message", [
    (dict(optimizer="lion"), "unknown optimizer"),
    (dict(lr_schedule="exp"), "unknown lr schedule"),
    (dict(label_smoothing=1.0), "label smoothing"),
    (dict(augment=("rotate",)), "unknown augmentation"),
])
def test_a_bad_recipe_is_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        JobSpec("j", "d", "digits-cnn", (1, 8, 8), 10, 100, train=TrainParams(**bad))


def test_target_and_top_k_are_checked():
    with pytest.raises(ConfigError, match="target accuracy"):
        JobSpec("j", "d", "digits-cnn", (1, 8, 8), 10, 100, target_accuracy=1.5)
    with pytest.raises(ConfigError, match="top-k"):
        JobSpec("j", "d", "digits-cnn", (1, 8, 8), 10, 100, top_k=11)


def test_adamw_is_the_torch_stepper_and_keeps_its_moments_across_tasks():
    model = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
    params = TrainParams(optimizer="adamw", lr=0.01, weight_decay=0.01)
    assert inner.resolve("auto", 512, 2, "adamw") == "torch"
    with pytest.raises(ConfigError, match="SGD only"):
        inner.resolve("tasks", 512, 2, "adamw")
    stepper = inner.make_stepper("torch", model, params, 1)
    assert isinstance(stepper.optimizer, torch.optim.AdamW)
    x, y = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32), np.arange(64) % 10
    training.train_pass(stepper, x, y, 32, seed=0)
    stepper.set_lr(0.001)
    assert stepper.optimizer.param_groups[0]["lr"] == 0.001
    assert all(s["step"] == 2 for s in stepper.optimizer.state.values())


def test_label_smoothing_raises_the_loss_of_a_confident_right_answer():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([8.0, -8.0]))
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    plain = inner.make_stepper("torch", model, TrainParams(lr=1e-9), 1).step(x, y)
    smoothed = inner.make_stepper("torch", model, TrainParams(lr=1e-9, label_smoothing=0.2), 1).step(x, y)
    assert smoothed > plain + 1


def test_augmentation_is_seeded_and_keeps_the_shape():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = training.augment_batch(x, ("crop", "flip"), np.random.default_rng(1))
    b = training.augment_batch(x, ("crop", "flip"), np.random.default_rng(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    many = torch.arange(64 * 4, dtype=torch.float32).reshape(64, 1, 2, 2)
    flipped = training.augment_batch(many, ("flip",), np.random.default_rng(3))
    mirrored = [torch.equal(f, o.flip(2)) for f, o in zip(flipped, many)]
    assert all(m or torch.equal(f, o) for m, f, o in zip(mirrored, flipped, many))
    assert 16 < sum(mirrored) < 48  # about half are mirrored left to right


def test_top_k_counts_the_label_among_the_k_best_scores():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([3.0, 2.0, 1.0]))
    x, y = np.zeros((3, 1, 1, 1), np.float32), np.array([0, 1, 2])
    scores = training.score(model, x, y, top_k=2)
    assert scores["accuracy"] == pytest.approx(1 / 3) and scores["top_k_accuracy"] == pytest.approx(2 / 3)


def test_the_combinations_a_worker_could_not_run_are_refused_at_submit():
    with pytest.raises(ConfigError, match="SGD only"):
        JobSpec("j", "d", "digits-cnn", (1, 8, 8), 10, 100, inner="tasks", train=TrainParams(optimizer="adamw"))


def test_the_sync_rule_takes_a_target_accuracy_and_patience():
    """Its committed rounds are evaluated once an epoch (bpt.job.task.after_commit), so both
    can stop it; they were refused while it evaluated only at the end."""
    sync = dataclasses.replace(JobSpec.__dataclass_fields__["rule"].default, kind="sync")
    spec = JobSpec("j", "d", "digits-cnn", (1, 8, 8), 10, 100, target_accuracy=0.9, patience=2, rule=sync)
    assert spec.rule.synchronous and spec.target_accuracy == 0.9 and spec.patience == 2


def test_adamw_state_survives_a_pull_of_new_weights_between_tasks():
    """Between two tasks a worker loads the pulled global weights into its model: the
    optimizer's moments stay (only weights travel)."""
    model = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
    stepper = inner.make_stepper("torch", model, TrainParams(optimizer="adamw", lr=0.01), 1)
    x, y = np.random.default_rng(0).normal(size=(32, 1, 8, 8)).astype(np.float32), np.arange(32) % 10
    training.train_pass(stepper, x, y, 32, seed=0)
    moments = {id(p): s["exp_avg"].clone() for p, s in stepper.optimizer.state.items()}
    training.load_numpy_state(model, training.state_to_numpy(models.build_model("digits-cnn", (1, 8, 8), 10, seed=1)))
    training.train_pass(stepper, x, y, 32, seed=1)
    assert all(s["step"] == 2 for s in stepper.optimizer.state.values())
    assert all(not torch.equal(moments[id(p)], s["exp_avg"]) for p, s in stepper.optimizer.state.items())
