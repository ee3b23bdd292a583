"""What a user would run instead of bpt, on the emulator's virtual clock (pure: no I/O):
data-parallel SGD as torchrun's DDP runs it, and local SGD rounds (with DiLoCo's outer
Nesterov step as an option). The same model code, data, seeds, lr schedule and scoring as
bpt.plan.emulator, so a benchmark compares training methods, not harnesses.

DDP with K replicas of batch b is one model trained on batches of K x b: every replica
computes the gradient of its b samples and the all-reduce averages them. Its recipe (Goyal
et al., 2017) scales the lr linearly with K and warms it up linearly over the first samples.
A step takes the slowest replica's batch time plus a ring all-reduce of the gradients.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from bpt.plan import emulator
from bpt.train import inner
from bpt.train import merge
from bpt.model import registry as models
from bpt.plan import partition
from bpt.train import training
from bpt.plan.emulator import Cluster, Curve, Job
from bpt.train.evaluation import Scorer
from bpt.train.schedule import lr_factor


@dataclasses.dataclass(frozen=True)
class Ring:
    """A ring all-reduce of B bytes over K nodes: 2 (K-1)/K x B / bandwidth + 2 (K-1) hops'
    latency (the bandwidth-optimal ring; Patarasuk and Yuan, 2009)."""

    bandwidth: float = 1.25e9  # bytes/s: 10 Gb Ethernet
    latency: float = 25e-6  # seconds per hop

    def seconds(self, k: int, nbytes: int) -> float:
        return 0.0 if k <= 1 else 2 * (k - 1) / k * nbytes / self.bandwidth + 2 * (k - 1) * self.latency


def model_bytes(weights: dict[str, np.ndarray]) -> int:
    return int(sum(w.nbytes for w in weights.values()))


def ddp(job: Job, cluster: Cluster, data, initial: dict[str, np.ndarray], *, lr: float,
        warmup_samples: int = 30_000, ring: Ring = Ring(), step_overhead: float = 0.0, eval_every: int = 1000,
        target: float | None = None, screen: int = 0) -> Curve:
    """Synchronous data-parallel SGD: K = cluster.workers replicas, global batch K x
    job.train.batch_size, at `lr` (the caller applies linear scaling), warmed up linearly over
    the first warmup_samples, then the job's schedule over the samples trained. Rates as the
    emulator draws them; a step waits for the slowest replica."""
    k, batch = cluster.workers, job.train.batch_size
    rates = emulator.worker_rates(cluster, random.Random(cluster.seed))
    step_seconds = max(batch / r for r in rates) + ring.seconds(k, model_bytes(initial)) + step_overhead
    model = models.build_for(job)
    training.load_numpy_state(model, initial)
    params = dataclasses.replace(job.train, batch_size=k * batch, lr=lr)
    stepper = inner.make_stepper("torch", model, params, threads=torch.get_num_threads())
    scorer = Scorer(models.build_for(job), data.x_test, data.y_test, target, screen)
    curve, n, global_batch = Curve(), len(data.x_train), k * batch
    total, trained, now, next_eval = job.epochs * n, 0, 0.0, eval_every
    xt, yt = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for epoch in range(job.epochs):
        order = torch.from_numpy(np.random.default_rng(job.seed + epoch).permutation(n))
        for i in range(0, n - global_batch + 1, global_batch):  # drop_last, as DistributedSampler's batches
            warm = min(1.0, (trained + global_batch) / warmup_samples) if warmup_samples > 0 else 1.0
            stepper.set_lr(lr * warm * lr_factor(job.train.lr_schedule, trained / total, job.epochs, 0.0,
                                                 job.train.step_every))
            model.train()
            idx = order[i:i + global_batch]
            stepper.step(xt[idx], yt[idx])
            trained += global_batch
            now += step_seconds
            curve.versions += 1
            if trained >= next_eval:
                while next_eval <= trained:
                    next_eval += eval_every
                if _score(curve, scorer, training.state_to_numpy(model), trained, now, target):
                    return _done(curve, now)
    _score(curve, scorer, training.state_to_numpy(model), trained, now, None)
    return _done(curve, now)


def local_sgd(job: Job, cluster: Cluster, data, initial: dict[str, np.ndarray], *, outer_lr: float = 1.0,
              outer_momentum: float = 0.0, outer_warmup: int = 0, ring: Ring = Ring(), eval_every: int = 1000,
              target: float | None = None, screen: int = 0, sized: bool = False, commit: float = 0.0) -> Curve:
    """Synchronous rounds: every worker pulls the same weights, trains one subset of the
    shared queue with its own optimizer (kept across rounds, as bpt's workers keep theirs),
    and the K deltas are averaged by an all-reduce: W += outer_lr x step, step the mean delta
    or, with outer_momentum, a Nesterov step on it (DiLoCo: 0.7 and 0.9); with outer_warmup,
    the outer lr rises linearly from 1 over that many samples. A round takes the slowest
    worker's task plus the all-reduce, plus `commit` seconds (a store that merges the round).

    sized: each worker's piece of a round is sized by its throughput (the fastest trains a
    subset, one at a third of its speed a third of one, so that all finish together: the
    contract's IDPA applied to rounds), taken in turn from the epoch's subsets in order, and
    the round's deltas are averaged weighted by their samples (as bpt's sync merge weights
    them). Without it, one subset each and a plain mean."""
    k = cluster.workers
    rates = emulator.worker_rates(cluster, random.Random(cluster.seed))
    workers = [emulator.VirtualWorker(i, job, rates[i]) for i in range(k)]
    scorer = Scorer(models.build_for(job), data.x_test, data.y_test, target, screen)
    weights = {name: w.copy() for name, w in initial.items()}
    curve, total = Curve(), job.epochs * len(data.x_train)
    trained, now, next_eval, momentum = 0, 0.0, eval_every, None
    reduce_seconds = ring.seconds(k, model_bytes(initial)) + commit
    for pieces in _round_pieces(job, len(data.x_train), rates, sized):
        lr = job.train.lr * lr_factor(job.train.lr_schedule, trained / total, job.epochs, job.train.warmup_epochs,
                                      job.train.step_every)
        deltas, counts, slowest = [], [], 0.0
        for w, (epoch, rows, weight) in zip(workers, pieces):
            x, y = data.x_train[rows], data.y_train[rows]
            first = rows.start if isinstance(rows, slice) else int(rows[0])
            emulator.train_task(w, job, weights, x, y, job.seed + 7919 * epoch + first, lr)
            deltas.append(merge.subtract(training.state_to_numpy(w.model), weights))
            counts.append(weight)
            slowest = max(slowest, len(x) / w.rate + cluster.overhead)
            trained += len(x)
        weights, momentum = _outer_step(weights, deltas, counts, momentum, outer_lr, outer_momentum,
                                        min(1.0, trained / outer_warmup) if outer_warmup > 0 else 1.0)
        now += slowest + reduce_seconds
        curve.versions += 1
        if trained >= next_eval:
            while next_eval <= trained:
                next_eval += eval_every
            if _score(curve, scorer, weights, trained, now, target):
                return _done(curve, now)
    _score(curve, scorer, weights, trained, now, None)
    return _done(curve, now)


def _round_pieces(job: Job, n: int, rates: list[float], sized: bool):
    """Each round's pieces, the i-th for worker i: (epoch, rows, weight in the mean). Plain:
    one subset of the shared queue each, weighted equally. Sized: pieces cut in turn from the
    epochs' subsets in the same order, worker i's of subset_size x rate_i / fastest samples,
    weighted by their samples."""
    subsets = partition.subsets(n, job.subset_size)
    queue = [(e, s) for e in range(job.epochs) for s in partition.waves(len(subsets), e, job.seed, None)[0]]
    if not sized:
        for r in range(0, len(queue), len(rates)):
            yield [(epoch, slice(*subsets[s]), 1) for epoch, s in queue[r:r + len(rates)]]
        return
    sizes = [max(1, round(job.subset_size * r / max(rates))) for r in rates]
    rows = np.concatenate([np.arange(*subsets[s]) for _, s in queue])  # every epoch's samples, in task order
    epoch_of = np.concatenate([np.full(subsets[s][1] - subsets[s][0], e) for e, s in queue])
    cursor = 0
    while cursor < len(rows):
        pieces = []
        for size in sizes:
            piece = rows[cursor:cursor + size]
            if len(piece):
                pieces.append((int(epoch_of[cursor]), piece, len(piece)))
            cursor += len(piece)
        yield pieces


def _outer_step(weights, deltas, counts, momentum, outer_lr: float, outer_momentum: float, ramp: float):
    """A round's outer step: the deltas' mean weighted by counts, or a Nesterov step on it with
    outer_momentum; the outer lr ramps from 1 to outer_lr. Returns (weights, momentum)."""
    mean = merge.sync_merge({n: np.zeros_like(v) for n, v in weights.items()}, deltas, counts, [1.0] * len(deltas))
    step = mean
    if outer_momentum > 0:
        momentum = mean if momentum is None else merge.apply_delta(mean, momentum, outer_momentum)
        step = merge.apply_delta(mean, momentum, outer_momentum)
    return merge.apply_delta(weights, step, 1.0 + (outer_lr - 1.0) * ramp), momentum


def _score(curve: Curve, scorer: Scorer, weights, trained: int, now: float, target: float | None) -> bool:
    accuracy = scorer(weights)
    curve.record(trained, now, accuracy)
    return target is not None and accuracy >= target


def _done(curve: Curve, now: float) -> Curve:
    curve.virtual_seconds = now
    return curve
