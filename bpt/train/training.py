"""Local training of one subnetwork and evaluation: plain PyTorch, shared by the workers and
by the single-process baseline so that both train exactly the same way."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


from bpt.job.recipe import AUGMENTATIONS, LR_SCALINGS, OPTIMIZERS, TrainParams  # noqa: F401  (their home before)


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Copy weights into the model. They may be read-only views of a pulled blob: the
    tensors made from them are only read by load_state_dict, which copies."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})


def make_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    """The local optimizer. Its state (momentum, Adam's moments) stays with the worker's
    subnetwork across tasks; only weights travel, never optimizer state."""
    if params.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum,
                           weight_decay=params.weight_decay)


def augment_batch(x: torch.Tensor, kinds: tuple[str, ...], rng: np.random.Generator) -> torch.Tensor:
    """Training-time augmentation of one batch: `crop` pads by an eighth of the side (at least
    1 pixel) with zeros and crops back at a random offset per image; `flip` mirrors a random
    half of the images left to right. Seeded, so a redelivered task trains the same way."""
    if "crop" in kinds:
        n, _, h, w = x.shape
        pad = max(1, min(h, w) // 8)
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if "flip" in kinds:
        flip = torch.from_numpy(rng.random(len(x)) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


class GradientMeter:
    """Gradient statistics of one pass, for the gradient noise scale (bpt.train.noise_scale): on
    every EVERY-th full batch, the stepper computes the batch's gradient as the mean of its
    two halves' (bpt.train.inner.TorchStepper) and hands both here: the halves' mean squared norm
    (batch b / 2) and the squared norm of their mean (batch b), at the same weights. Not the
    mean over a task's steps: it also shrinks as the model turns, and on digits that version
    measured 4x the noise scale one process found at fixed weights."""

    EVERY = 4  # measured batches cost about 20% more than plain ones: a few % of a task

    def __init__(self, batch_size: int):
        self.batch_size, self.seen, self.pairs, self.small, self.big = batch_size, 0, 0, 0.0, 0.0

    def wants(self, batch: int) -> bool:
        if batch != self.batch_size or batch < 4 or batch % 2:  # a short last batch would mix two batch sizes
            return False
        self.seen += 1
        return (self.seen - 1) % self.EVERY == 0

    def add_halves(self, g1: torch.Tensor, g2: torch.Tensor, half: int) -> None:
        mean = (g1 + g2) / 2
        self.small += (float(g1.dot(g1)) + float(g2.dot(g2))) / 2
        self.big += float(mean.dot(mean))
        self.pairs += 1
        self.half = half

    def result(self):
        """A noise_scale.GradStats (halves of `half` samples, 2 to a batch), or None if no
        batch was measured."""
        from bpt.train.noise_scale import GradStats

        if self.pairs < 1:
            return None
        return GradStats(2, self.half, self.small / self.pairs, self.big / self.pairs)


def train_pass(stepper, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
               augment: tuple[str, ...] = (), meter: GradientMeter | None = None) -> float:
    """One shuffled pass over (x, y) in mini-batches, each trained by stepper.step (see
    bpt.train.inner for the strategies); returns the mean training loss. With a meter, steppers
    that support it (the torch strategy) feed it every batch's gradients."""
    if meter is not None and hasattr(stepper, "meter"):
        stepper.meter = meter
        try:
            return train_pass(stepper, x, y, batch_size, seed, augment)
        finally:
            stepper.meter = None
    stepper.model.train()
    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(len(x)))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        xb = augment_batch(xt[idx], augment, rng) if augment else xt[idx]
        total += stepper.step(xb, yt[idx]) * len(idx)
        count += len(idx)
    return total / max(count, 1)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 64) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on (x, y)."""
    scores = score(model, x, y, batch_size)
    return scores["loss"], scores["accuracy"]


@torch.no_grad()
def score(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 64, top_k: int = 0) -> dict:
    """{loss, accuracy} of the model on (x, y), and top_k_accuracy (the label among the k
    highest scores) when top_k > 1.

    Small batches on purpose: on CPU the activations of a large batch fall out of cache, and
    batches of 1024 scored the ResNet 3.2x and LeNet-5 1.5x slower than batches of 64
    (single thread, this repository's CI machine)."""
    model.eval()
    device = next(model.parameters()).device
    loss, correct, in_top = 0.0, 0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = torch.from_numpy(np.asarray(x[i:i + batch_size])), torch.from_numpy(np.asarray(y[i:i + batch_size]))
        out = model(xb.to(device)).float()
        yb = yb.to(device)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
        if top_k > 1:
            in_top += int((out.topk(min(top_k, out.shape[1]), 1).indices == yb[:, None]).any(1).sum())
    n = max(len(x), 1)
    result = {"loss": loss / n, "accuracy": correct / n}
    if top_k > 1:
        result["top_k_accuracy"] = in_top / n
    return result
