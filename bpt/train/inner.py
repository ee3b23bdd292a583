"""The inner layer: parallelism inside one worker (BPT-CNN's task parallelism).

Two strategies train a mini-batch, selectable per job and per worker:

- `torch`: one step of torch.optim.SGD, parallel inside each operator on T intra-op threads;
- `tasks`: the mini-batch is split into T micro-batches whose gradients are computed as
  tasks on T threads (each running its operators on one intra-op thread), summed in a fixed
  order so the result equals the unsplit batch up to float rounding, and the SGD update runs
  as one task per parameter tensor, largest first (the critical path: the biggest tensor
  would otherwise finish last).

BatchNorm layers see per-micro-batch statistics under `tasks` (as in DDP without SyncBN), so
for models with BatchNorm the two strategies are close but not equal.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from bpt.job.recipe import STRATEGIES  # noqa: E402,F401  (the names live with the recipe: no torch)


class TorchStepper:
    """A plain optimizer step; PyTorch parallelises inside each operator."""

    name = "torch"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, threads: int, label_smoothing: float = 0.0,
                 autocast: torch.dtype | None = None):
        self.model, self.optimizer, self.threads = model, optimizer, threads
        self.label_smoothing = label_smoothing
        self.device = next(model.parameters()).device
        self.autocast = autocast  # bf16 mixed precision (bpt.model.devices); the weights stay float32
        self.meter = None  # a training.GradientMeter while a pass measures gradient statistics

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.meter is not None and self.meter.wants(len(x)):
            loss = self._measured_backward(x, y)
        else:
            loss = self._loss(x, y)
            loss.backward()
        self.optimizer.step()
        return loss.item()

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            return F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)

    def _measured_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's gradient as the mean of its two halves' (the same gradient, at the same
        weights), handing both halves to the meter: two batch sizes at fixed weights is what
        the gradient noise scale needs (training.GradientMeter)."""
        half = len(x) // 2
        params = [p for p in self.model.parameters() if p.requires_grad]
        first = self._loss(x[:half], y[:half])
        first.backward()
        g1 = [None if p.grad is None else p.grad.detach().clone() for p in params]
        self.optimizer.zero_grad(set_to_none=True)
        second = self._loss(x[half:], y[half:])
        second.backward()
        g2 = [None if p.grad is None else p.grad.detach() for p in params]
        flat = lambda gs: torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float()  # noqa: E731
                                     for p, g in zip(params, gs)])
        self.meter.add_halves(flat(g1), flat(g2), half)
        for p, a, b in zip(params, g1, g2):  # the whole batch's gradient; untouched parameters stay without one
            if a is not None or b is not None:
                p.grad = ((torch.zeros_like(p) if a is None else a) + (torch.zeros_like(p) if b is None else b)) / 2
        return (first.detach() + second.detach()) / 2


class TaskStepper:
    """Micro-batch gradient tasks on T threads, then per-tensor SGD update tasks."""

    name = "tasks"

    def __init__(self, model: nn.Module, lr: float, momentum: float, weight_decay: float, threads: int,
                 label_smoothing: float = 0.0):
        self.model, self.lr, self.momentum, self.weight_decay, self.threads = model, lr, momentum, weight_decay, threads
        self.label_smoothing = label_smoothing
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)
        # Priority: the largest tensors first, so the longest update is never the last one started.
        self.update_order = sorted(range(len(self.params)), key=lambda i: -self.params[i].numel())
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bpt-inner")

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, list[torch.Tensor]]:
        # Sum-reduced loss over the full batch size: the micro-batch gradients add up to the
        # gradient of the mean loss over the whole mini-batch.
        loss = F.cross_entropy(self.model(x), y, reduction="sum", label_smoothing=self.label_smoothing) / batch
        return loss.item(), list(torch.autograd.grad(loss, self.params))

    def _update(self, i: int, grad: torch.Tensor) -> None:
        p = self.params[i]
        with torch.no_grad():
            if self.weight_decay:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum:
                if self.buffers[i] is None:
                    self.buffers[i] = grad.clone()
                else:
                    self.buffers[i].mul_(self.momentum).add_(grad)
                grad = self.buffers[i]
            p.add_(grad, alpha=-self.lr)

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        parts = [(xs, ys) for xs, ys in zip(x.tensor_split(self.threads), y.tensor_split(self.threads)) if len(xs)]
        results = list(self.pool.map(lambda part: self._gradients(*part, len(x)), parts))
        grads = [sum(g) for g in zip(*(r[1] for r in results))]  # fixed order: deterministic
        list(self.pool.map(lambda i: self._update(i, grads[i]), self.update_order))
        return sum(r[0] for r in results)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


# Measured with benchmarks/inner_layer.py on the 2-core CI machine (docs/inner-layer.md): at
# 2 threads `tasks` beat `torch` only from batch 256 on (1.05x LeNet-5, 1.30x ResNet), and lost
# at batch 32 and 64 (0.70-0.94x); with one thread there is nothing to split.
AUTO_TASKS_MIN_BATCH = 256


def resolve(strategy: str, batch_size: int, threads: int, optimizer: str = "sgd", device: str = "cpu") -> str:
    """The strategy to run; `auto` picks the measured winner for this batch and thread count.
    `tasks` implements SGD only: with AdamW, auto picks torch, and tasks is refused."""
    if strategy not in STRATEGIES:
        from bpt.errors import ConfigError

        raise ConfigError(f"unknown inner strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy == "tasks" and optimizer != "sgd":
        from bpt.errors import ConfigError

        raise ConfigError(f"the tasks inner strategy implements SGD only, not {optimizer}; use --inner torch")
    if strategy == "tasks" and device != "cpu":
        return "torch"  # tasks splits work over CPU threads; a GPU worker runs the job with torch
    if strategy != "auto":
        return strategy
    if optimizer != "sgd" or device != "cpu":
        return "torch"
    return "tasks" if threads >= 2 and batch_size >= AUTO_TASKS_MIN_BATCH else "torch"


def make_stepper(strategy: str, model: nn.Module, params, threads: int, autocast: torch.dtype | None = None):
    """A stepper for the resolved strategy; sets the process's intra-op threads to match."""
    if strategy == "tasks":
        torch.set_num_threads(1)
        return TaskStepper(model, params.lr, params.momentum, params.weight_decay, threads, params.label_smoothing)
    from bpt.train.training import make_optimizer

    torch.set_num_threads(threads)
    return TorchStepper(model, make_optimizer(model, params), threads, params.label_smoothing, autocast)
