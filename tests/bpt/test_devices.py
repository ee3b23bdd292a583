"""Device choice (bpt.model.devices): auto falls back to the CPU, an absent GPU is an error."""

import pytest
import torch

from bpt.model import devices
from bpt.train import inner
from bpt.model import registry as models
from bpt.train import training
from bpt.errors import ConfigError
from bpt.settings import Settings


def test_auto_is_cuda_only_where_there_is_one():
    assert devices.resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.resolve("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_asking_for_cuda_without_one_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA device"):
        devices.resolve("cuda:0")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu"])
def test_a_device_name_is_checked_with_the_settings(bad):
    with pytest.raises(ConfigError, match="device must be"):
        Settings(device=bad).validate()


def test_bf16_autocast_is_the_cuda_default_and_fp32_the_cpus():
    assert devices.autocast_dtype(torch.device("cuda", 0), "auto") is torch.bfloat16
    assert devices.autocast_dtype(torch.device("cpu"), "auto") is None
    assert devices.autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16


def test_a_bf16_step_computes_in_bf16_and_keeps_float32_weights():
    x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    losses = []
    for autocast in (None, torch.bfloat16):
        model = models.build_model("digits-cnn", (1, 8, 8), 10, seed=0)
        losses.append(inner.make_stepper("torch", model, training.TrainParams(), 1, autocast=autocast).step(x, y))
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[0], rel=0.02)  # bf16 rounding, same loss
    assert inner.resolve("auto", 512, 2, device="cuda") == "torch"


def test_choosing_a_device_does_not_initialise_cuda_in_this_process():
    """The worker's main process resolves and shows its device before Celery forks the pool:
    a CUDA runtime call there would break every pool process on a GPU machine."""
    import os

    devices.describe(devices.resolve("auto"))
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
    assert not torch.cuda.is_initialized()
