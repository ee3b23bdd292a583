"""Shared by the emulator's and the baselines' tests: digits, its initial weights, and a job
on it with the recipe those tests were written for."""

import pytest

from bpt.data import datasets
from bpt.plan import emulator
from bpt.model import registry as models
from bpt.train import training


@pytest.fixture(scope="module")
def digits():
    data = datasets.digits(seed=0)
    initial = training.state_to_numpy(models.build_model("digits-cnn", data.input_shape, 10, seed=0))
    return data, initial


@pytest.fixture(scope="module")
def job():
    """job(data, **fields): an emulator.Job on digits at lr 0.05, constant, unscaled (the
    default before issue 23)."""
    def make(data, **kw):
        kw.setdefault("train", training.TrainParams(32, 0.05, 0.9, lr_schedule="constant", lr_scaling="none"))
        return emulator.Job("digits-cnn", data.input_shape, 10, subset_size=128, **kw)
    return make
