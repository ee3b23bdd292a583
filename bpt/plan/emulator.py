"""An emulated cluster on a virtual clock: K workers training a real CNN (pure, no Redis, no
Celery), to measure statistical efficiency at sizes one machine cannot host.

Each virtual worker keeps its own local model and optimizer for the whole run (as a real
worker process does, bpt.workers.runtime), and loops: take the next subset off the shared
queue, pull (W, v), train it with bpt.train.training.train_pass (the code the workers run), score
itself on the validation slice, and push its delta when its virtual task ends. Pushes are
merged in virtual-time order by bpt.train.rule_step.step (with the rule's state) and
merge.apply_delta, the functions the weight store calls, so what is measured here is the rule
the real system applies.

A task takes size / rate + overhead virtual seconds; rates are equal, drawn lognormal, or
given per worker (slowdowns). Its push then waits for the store, which merges one push at a
time (`merge` seconds each, as the real store's lease does), so a cluster that pushes faster
than the store merges queues there, and the store's utilisation is reported. Workers can die
(the task in flight is lost and its subset goes back to the queue) or join late. Training
happens when the task's compute ends (its result depends only on what was pulled and on the
worker's own state), so the run is exact and seeded; its cost is the real training of every
sample, about as long as one process training the same samples.

Each task trains at the job's learning-rate schedule (bpt.train.schedule) at the job's progress,
counted in samples trained, so a rule that makes fewer versions is not stretched by it, and
with the job's lr scaling for the live K (bpt.train.schedule.lr_scale), as the workers do.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from typing import Callable

import numpy as np

from bpt.train import inner
from bpt.train import merge, rule_step
from bpt.model import registry as models
from bpt.plan import partition
from bpt.train import adasum, training
from bpt.train.merge import MergeRule
from bpt.train.evaluation import Scorer
from bpt.train.schedule import lr_factor, lr_scale


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The virtual machines: how many, how fast, and what happens to them."""

    workers: int = 4
    sigma: float = 0.0  # lognormal spread of throughputs; 0: all equal
    rate: float = 6000.0  # mean samples/s (only shapes the timeline: nothing here sleeps)
    overhead: float = 0.02  # seconds per task outside training (pull, push, queueing)
    failures: float = 0.0  # fraction of workers that die during the run
    joins: float = 0.0  # fraction of workers that join late
    seed: int = 0
    merge: float = 0.0  # seconds the store takes to merge one push, one push at a time (0: free)
    slowdowns: tuple[float, ...] = ()  # per worker: rate / slowdown (overrides sigma); e.g. (1, 1, 3)


@dataclasses.dataclass(frozen=True)
class Job:
    """What is trained, as a bpt job would (the same fields as JobSpec's)."""

    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    epochs: int = 4
    subset_size: int = 256
    train: training.TrainParams = training.TrainParams()
    rule: MergeRule = MergeRule()
    score_samples: int = 64
    seed: int = 0
    architecture: str = ""  # as JobSpec's: a declarative network, or a plug-in's version
    plugin: str = ""
    reset_momentum: bool = False  # clear a worker's optimizer state at every pull
    buffer: "Buffered | None" = None  # FedBuff-style aggregation (emulator only), instead of rule
    adasum: bool = False  # the rule's scaled push combined with the updates since its pull by Adasum (bpt.train.adasum)


@dataclasses.dataclass(frozen=True)
class Buffered:
    """Buffered asynchronous aggregation, as FedBuff does: pushes are averaged, and every
    `size` of them (0: the live workers) become one version, W <- W + lr * step, where step
    is the average or, with momentum > 0, a Nesterov step on it (DiLoCo's outer optimizer).
    Measured in the emulator only (docs/scaling.md): the store does not implement it."""

    size: int = 0
    lr: float = 1.0
    momentum: float = 0.0
    # Semi-synchronous rounds (emulator only, issue 25): a worker whose pull no flush has
    # followed yet waits for the next flush instead of training again from the same weights;
    # a flush comes when every live worker has pushed or, once all but `backup` of them have,
    # at once if the missing ones' measured rates put their pushes more than `patience` x the
    # mean task time away, else after that long at most (so a slow worker does not hold a
    # round); a late push joins the next round's average.
    barrier: bool = False
    backup: int = 1
    patience: float = 0.25


@dataclasses.dataclass
class Curve:
    """What one emulated run measured."""

    samples: list[int] = dataclasses.field(default_factory=list)  # samples trained, all workers
    accuracy: list[float] = dataclasses.field(default_factory=list)  # test accuracy then
    staleness: dict[int, int] = dataclasses.field(default_factory=dict)  # accepted pushes by staleness
    rejected: int = 0
    versions: int = 0
    virtual_seconds: float = 0.0
    seconds: list[float] = dataclasses.field(default_factory=list)  # virtual time of each evaluation
    store_busy: float = 0.0  # virtual seconds the store spent merging
    rule_state: dict = dataclasses.field(default_factory=dict)  # the merge rule's state at the end

    def samples_to(self, target: float) -> int | None:
        """Samples trained when the test accuracy first reached target (None: never)."""
        return next((s for s, a in zip(self.samples, self.accuracy) if a >= target), None)

    def seconds_to(self, target: float) -> float | None:
        """Virtual seconds when the test accuracy first reached target (None: never)."""
        return next((t for t, a in zip(self.seconds, self.accuracy) if a >= target), None)

    def record(self, samples: int, seconds: float, accuracy: float) -> None:
        """One evaluation: samples trained, virtual time, test accuracy."""
        self.samples.append(samples)
        self.seconds.append(seconds)
        self.accuracy.append(accuracy)

    @property
    def store_utilisation(self) -> float:
        return self.store_busy / self.virtual_seconds if self.virtual_seconds > 0 else 0.0

    @property
    def final_accuracy(self) -> float:
        return self.accuracy[-1] if self.accuracy else 0.0


class VirtualWorker:
    def __init__(self, index: int, job: Job, rate: float):
        self.index, self.rate = index, rate
        self.model = models.build_for(job)
        self.stepper = inner.make_stepper("torch", self.model, job.train, threads=1)
        self.alive = True
        self.task = None  # (subset, epoch, pulled version, pulled weights, samples trained at its start)
        self.result = None  # (delta, accuracy on the score slice, gradient statistics) once its compute ended
        self.finish_at = 0.0  # virtual time its current task's compute ends


def emulate(job: Job, cluster: Cluster, data, initial: dict[str, np.ndarray], *,
            eval_every: int = 2000, target: float | None = None,
            on_eval: Callable[[int, float], None] | None = None, screen: int = 0) -> Curve:
    """Run the job on the emulated cluster; stop at its last epoch, or once target is reached.

    data: a bpt.data.datasets.Dataset; initial: the version-0 weights. The test split is scored
    every eval_every samples trained (and at the end); with a target and `screen`, first on
    its first `screen` images, and on all of it only when that screen is within
    SCREEN_MARGIN of the target (bpt.train.evaluation.Scorer)."""
    rng = random.Random(cluster.seed)
    rates = worker_rates(cluster, rng)
    order = list(range(cluster.workers))
    rng.shuffle(order)
    n_fail, n_join = round(cluster.failures * cluster.workers), round(cluster.joins * cluster.workers)
    if n_fail + n_join >= cluster.workers:
        raise ValueError("at least one worker must neither join late nor die")
    epoch_seconds = len(data.x_train) / sum(rates)
    joins = {i: rng.uniform(0.1, 1.0) * epoch_seconds for i in order[:n_join]}
    deaths = {i: rng.uniform(0.2, 0.8) * job.epochs * epoch_seconds for i in order[n_join:n_join + n_fail]}

    subsets = partition.subsets(len(data.x_train), job.subset_size)
    queue = [(e, s) for e in range(job.epochs) for s in partition.waves(len(subsets), e, job.seed, None)[0]]
    queue.reverse()  # pop() takes the next subset
    weights = {k: v.copy() for k, v in initial.items()}
    version, recent, rule_state = 0, [], {}
    scorer = Scorer(models.build_for(job), data.x_test, data.y_test, target, screen)
    x_score, y_score = data.x_val[:job.score_samples], data.y_val[:job.score_samples]
    workers = [VirtualWorker(i, job, rates[i]) for i in range(cluster.workers)]
    curve = Curve()
    events: list = []
    trained, next_eval, now, store_free = 0, eval_every, 0.0, 0.0
    total = job.epochs * len(data.x_train)
    pending, outer = [], None  # buffered aggregation: pushes not yet applied, outer momentum
    waiting: list[VirtualWorker] = []  # semi-synchronous rounds: workers waiting for the next flush
    deadline = -1  # the version whose round has a deadline pending
    task_seconds = job.subset_size / cluster.rate + cluster.overhead  # a mean task, for the deadline

    def live() -> int:
        return sum(w.alive for w in workers) or 1

    def start(w: VirtualWorker, t: float) -> None:
        if not w.alive or not queue:
            w.task = None
            return
        epoch, subset = queue.pop()
        w.task = (subset, epoch, version, weights, trained)  # weights are replaced, never changed in place
        a, b = subsets[subset]
        w.finish_at = t + (b - a) / w.rate + cluster.overhead
        heapq.heappush(events, (w.finish_at, w.index, "done"))

    def flush(t: float) -> None:
        """One buffered version from the pending pushes; workers waiting for it start again."""
        nonlocal weights, outer, version, pending, waiting
        weights, outer = _flush(job.buffer, weights, pending, outer)
        version += 1
        pending, resumed, waiting = [], waiting, []
        for other in resumed:
            start(other, t)

    def close_round_if_due(t: float, pusher: VirtualWorker | None = None) -> None:
        """Semi-synchronous rounds: flush when every live worker has pushed, or when all but
        `backup` have and no other worker still training is due to push within `patience` x a
        task (by its measured rate); otherwise make sure a deadline is pending."""
        nonlocal deadline
        if not pending or len(pending) < max(1, live() - job.buffer.backup):
            return
        wait = job.buffer.patience * task_seconds
        soon = [x for x in workers if x is not pusher and x.alive and x.task is not None and x.finish_at <= t + wait]
        if len(pending) >= live() or not soon:
            flush(t)
        elif deadline != version:
            deadline = version
            heapq.heappush(events, (t + wait, -1, f"deadline:{version}"))

    def score(at: int, t: float) -> float:
        accuracy = scorer(weights)
        curve.record(at, t, accuracy)
        if on_eval:
            on_eval(at, accuracy)
        return accuracy

    for w in workers:
        if w.index in joins:
            w.alive = False
            heapq.heappush(events, (joins[w.index], w.index, "join"))
        else:
            start(w, 0.0)
        if w.index in deaths:
            heapq.heappush(events, (deaths[w.index], w.index, "die"))

    reached = False
    while events:
        at_time, index, kind = heapq.heappop(events)
        if kind.startswith("deadline:"):  # a semi-synchronous round waited long enough for its last pushes
            if int(kind.split(":")[1]) == version and pending:  # else a flush came first: not an event
                now = at_time
                flush(now)
            continue
        now = at_time
        w = workers[index]
        if kind == "join":
            w.alive = True
            start(w, now)
            continue
        if kind == "die":
            if w.task is not None:  # its subset is handed out again (the broker redelivers it)
                queue.append((w.task[1], w.task[0]))
            w.alive, w.task = False, None
            if job.buffer is not None and job.buffer.barrier:  # the round may be complete without it
                close_round_if_due(now)
            continue
        if not w.alive or w.task is None:
            continue
        if kind == "done":  # compute ended: train now (exact), then queue the push at the store
            subset, epoch, pulled_version, pulled, at = w.task
            a, b = subsets[subset]
            lr = job.train.lr * lr_scale(job.train.lr_scaling, job.rule.kind, live()) * lr_factor(
                job.train.lr_schedule, at / total, job.epochs, job.train.warmup_epochs, job.train.step_every)
            stats = train_task(w, job, pulled, data.x_train[a:b], data.y_train[a:b], job.seed + 7919 * epoch + a, lr)
            _, accuracy = training.evaluate(w.model, x_score, y_score)
            w.result = (merge.subtract(training.state_to_numpy(w.model), pulled), accuracy, stats)
            if cluster.merge > 0:
                store_free = max(store_free, now) + cluster.merge
                curve.store_busy += cluster.merge
                heapq.heappush(events, (store_free, w.index, "push"))
                continue
        subset, epoch, pulled_version, pulled, _ = w.task
        a, b = subsets[subset]
        delta, accuracy, stats = w.result
        staleness = version - pulled_version
        q = merge.accuracy_weight(accuracy, recent)
        if job.buffer is not None:
            pending.append((delta, q))
            curve.staleness[staleness] = curve.staleness.get(staleness, 0) + 1
            if job.buffer.barrier:
                close_round_if_due(now, pusher=w)
            elif len(pending) >= (job.buffer.size or live()):
                flush(now)
        else:
            rule_state, scale = rule_step.step(job.rule, rule_state,
                                               rule_step.Push(staleness, q, live(), trained / total, stats))
            if scale is None:
                curve.rejected += 1
            else:
                if job.adasum:  # the push adds adasum(U, scale D) - U, U the updates since its pull
                    delta, scale = adasum.increment(merge.subtract(weights, pulled), delta, scale), 1.0
                weights = merge.apply_delta(weights, delta, scale)
                version += 1
                curve.staleness[staleness] = curve.staleness.get(staleness, 0) + 1
                recent = [accuracy] + recent[:merge.RECENT_ACCURACIES - 1]
        trained += b - a
        if job.buffer is not None and job.buffer.barrier and version == pulled_version:
            waiting.append(w)  # no flush since its pull: training again would repeat its weights
            w.task = None
        else:
            start(w, now)
        if trained >= next_eval:
            next_eval += eval_every
            if score(trained, now) >= (target if target is not None else math.inf):
                reached = True
                break
    if pending and not reached:  # a buffered run's last pushes: applied, and scored below
        flush(now)
        if curve.samples and curve.samples[-1] == trained:  # scored before that flush: again
            del curve.samples[-1], curve.seconds[-1], curve.accuracy[-1]
    if not curve.samples or curve.samples[-1] != trained:
        score(trained, now)
    curve.versions, curve.virtual_seconds, curve.rule_state = version, now, rule_state
    return curve


def _flush(cfg: Buffered, weights, pending, momentum):
    """One buffered version: the q-weighted average of the pending deltas, then the outer step."""
    total = sum(q for _, q in pending)
    mean = {k: np.zeros_like(v) for k, v in weights.items()}
    for delta, q in pending:  # every q zero: a plain average
        mean = merge.apply_delta(mean, delta, q / total if total > 0 else 1.0 / len(pending))
    step = mean
    if cfg.momentum > 0:
        momentum = mean if momentum is None else merge.apply_delta(mean, momentum, cfg.momentum)
        step = merge.apply_delta(mean, momentum, cfg.momentum)  # Nesterov: g + beta * m
    return merge.apply_delta(weights, step, cfg.lr), momentum


def train_task(w: VirtualWorker, job: Job, pulled, x, y, seed: int, lr: float):
    """Train one task from the pulled weights; the gradient statistics it measured
    (noise_scale.GradStats) when the job's rule uses them (rule_step.USES_STATS), else None:
    measuring costs time, and leaves the emulator's other runs as they were."""
    training.load_numpy_state(w.model, pulled)
    if job.reset_momentum:
        w.stepper.optimizer.state.clear()
    w.stepper.set_lr(lr)
    meter = training.GradientMeter(job.train.batch_size) if job.rule.kind in rule_step.USES_STATS else None
    training.train_pass(w.stepper, x, y, job.train.batch_size, seed=seed, augment=job.train.augment, meter=meter)
    return meter.result() if meter is not None else None


def worker_rates(cluster: Cluster, rng: random.Random) -> list[float]:
    if cluster.slowdowns:
        if len(cluster.slowdowns) != cluster.workers:
            raise ValueError(f"{len(cluster.slowdowns)} slowdowns for {cluster.workers} workers")
        return [cluster.rate / f for f in cluster.slowdowns]
    if cluster.sigma <= 0:
        return [cluster.rate] * cluster.workers
    mu = math.log(cluster.rate) - cluster.sigma ** 2 / 2  # mean stays `rate`
    return [rng.lognormvariate(mu, cluster.sigma) for _ in range(cluster.workers)]
