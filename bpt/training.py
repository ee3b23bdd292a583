"""Local training of one subnetwork and evaluation: plain PyTorch, shared by the workers and
by the single-process baseline so that both train exactly the same way."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class TrainParams:
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Copy weights into the model. They may be read-only views of a pulled blob: the
    tensors made from them are only read by load_state_dict, which copies."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                           weight_decay=params.weight_decay)


def train_pass(stepper, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> float:
    """One shuffled pass over (x, y) in mini-batches, each trained by stepper.step (see
    bpt.inner for the strategies); returns the mean training loss."""
    stepper.model.train()
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        total += stepper.step(xt[idx], yt[idx]) * len(idx)
        count += len(idx)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on (x, y).

    Small batches on purpose: on CPU the activations of a large batch fall out of cache, and
    batches of 1024 scored the ResNet 3.2x and LeNet-5 1.5x slower than batches of 64
    (single thread, this repository's CI machine)."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = torch.from_numpy(x[i:i + batch_size]), torch.from_numpy(y[i:i + batch_size])
        out = model(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    return loss / max(len(x), 1), correct / max(len(x), 1)
