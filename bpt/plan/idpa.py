"""IDPA: heterogeneity-aware incremental data partitioning, and its baselines (pure).

An epoch is the index range [0, N). A policy hands out contiguous ranges to nodes in
increments; the same policy objects run in the simulator (bpt.plan.simulator) and are meant for the
scheduler task. Each round a policy sees, per node, its measured throughput (None before its
first task) and the samples already queued on it, and returns new assignments.

- `IDPA` (the contract in shared/bpt-cnn.md): a probe share first (probe_fraction of the
  epoch, split equally), then increments proportional to measured throughput: a node whose
  queued work has fallen to half of rate x horizon is topped up to rate x horizon, where the
  horizon shrinks to remaining / total rate at the end of the epoch so that nodes finish
  together.
- `StaticSplit`: N / K samples per node, all at once (what waits for the slowest).
- `WorkQueue`: fixed-size chunks to whichever node is idle (a plain shared Celery queue).
"""

from __future__ import annotations

import dataclasses
from collections import deque


@dataclasses.dataclass(frozen=True)
class NodeView:
    name: str
    rate: float | None  # measured samples/s, None before its first completed task
    queued: int  # samples assigned to it and not finished


@dataclasses.dataclass(frozen=True)
class Assignment:
    node: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class Ranges:
    """The unassigned part of an epoch: ranges given back (by dead or overloaded nodes) first,
    then the untouched tail [cursor, n). Every index is handed out once unless given back."""

    def __init__(self, n: int):
        self.n = n
        self.cursor = 0
        self.returned: deque[tuple[int, int]] = deque()
        self.returned_samples = 0

    @property
    def remaining(self) -> int:
        return self.returned_samples + (self.n - self.cursor)

    def give_back(self, start: int, end: int) -> None:
        if end > start:
            self.returned.append((start, end))
            self.returned_samples += end - start

    def take(self, size: int) -> list[tuple[int, int]]:
        """About size samples as ranges. Ranges given back come first and whole: a range keeps
        its exact bounds for life, so a late push from its first owner and the push of the node
        it moved to are the same (epoch, range) and only one is merged."""
        taken = []
        while size > 0 and self.returned:
            start, end = self.returned.popleft()
            taken.append((start, end))
            self.returned_samples -= end - start
            size -= end - start
        if size > 0 and self.cursor < self.n:
            end = min(self.n, self.cursor + size)
            taken.append((self.cursor, end))
            self.cursor = end
        return taken


def _assign(node: str, ranges: Ranges, size: int) -> list[Assignment]:
    return [Assignment(node, s, e) for s, e in ranges.take(size)]


class StaticSplit:
    name = "static"

    def __init__(self, chunk: int = 512):
        self.chunk = chunk
        self.done = False

    def assign(self, ranges: Ranges, nodes: list[NodeView]) -> list[Assignment]:
        """Everything at the first call, N / K per node in chunks; later only work given back
        (re-split equally among the nodes)."""
        if self.done and not ranges.returned:
            return []
        self.done = True
        share = -(-ranges.remaining // max(len(nodes), 1))
        out = []
        for node in nodes:
            left = share
            while left > 0 and ranges.remaining:
                got = _assign(node.name, ranges, min(self.chunk, left))
                left -= sum(a.size for a in got)
                out += got
        return out


class WorkQueue:
    name = "greedy"

    def __init__(self, chunk: int = 512):
        self.chunk = chunk

    def assign(self, ranges: Ranges, nodes: list[NodeView]) -> list[Assignment]:
        """One chunk to every node with nothing queued."""
        out = []
        for node in nodes:
            if node.queued == 0 and ranges.remaining:
                out += _assign(node.name, ranges, self.chunk)
        return out


class IDPA:
    name = "idpa"

    def __init__(self, probe_fraction: float = 0.05, horizon: float = 2.0, min_chunk: int = 64,
                 max_chunk: int = 8192):
        self.probe_fraction = probe_fraction
        self.horizon = horizon  # seconds of work to keep queued on each node
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self.probe_size: int | None = None

    def assign(self, ranges: Ranges, nodes: list[NodeView], total_rate: float | None = None) -> list[Assignment]:
        """total_rate: the whole cluster's measured rate, when nodes is only part of it."""
        if self.probe_size is None:
            self.probe_size = max(self.min_chunk, int(self.probe_fraction * ranges.n / max(len(nodes), 1)))
        if total_rate is None:
            total_rate = sum(n.rate for n in nodes if n.rate)
        # Near the end, keep only as much queued as lets everyone finish together.
        horizon = min(self.horizon, ranges.remaining / total_rate) if total_rate else self.horizon
        out = []
        for node in nodes:
            if not ranges.remaining:
                break
            if node.rate is None:  # probe: an equal share, once, until it is measured
                want = self.probe_size if node.queued == 0 else 0
            else:
                target = int(node.rate * horizon)
                # Refill only once half the target has drained, and then in one piece: topping
                # up on every round would cut the work into many small (costly) tasks.
                want = 0 if node.queued > target // 2 else target - node.queued
                if want < self.min_chunk:
                    want = 0 if node.queued else self.min_chunk
            while want > 0 and ranges.remaining:
                got = _assign(node.name, ranges, min(want, self.max_chunk))
                want -= sum(a.size for a in got)
                out += got
        return out


POLICIES = {"static": StaticSplit, "greedy": WorkQueue, "idpa": IDPA}

HORIZON = 2.0  # at most this many seconds of queued work IDPA keeps on each worker ...
INCREMENTS_AHEAD = 2  # ... and at most this many subsets' worth on the fastest (one training, one queued)


def horizon_for(subset_size: int, fastest_rate: float | None) -> float:
    """The queue horizon a job uses: min(HORIZON, INCREMENTS_AHEAD subsets of the fastest
    worker), so that the fastest trains subset-sized ranges with one queued behind."""
    return min(HORIZON, INCREMENTS_AHEAD * subset_size / fastest_rate) if fastest_rate else HORIZON


def build_policy(partition: str, subset_size: int, epoch: int = 0, probe_size: int | None = None,
                 cursor: int = 0, fastest_rate: float | None = None):
    """The policy object a job of this partition and subset size runs in one round: the one
    configuration, used by the scheduler task (workers/scheduler.py) and the simulator
    (bpt/plan/simulator.py) alike. Tasks are never larger than a subset: fewer, larger merges cost
    accuracy (docs/heterogeneity.md). State that lives across rounds (the probe size, whether
    the static split was made) comes in as arguments."""
    if partition == "static":
        policy = StaticSplit(chunk=subset_size)
        policy.done = cursor > 0  # the split is made once per epoch
        return policy
    if partition == "greedy":
        return WorkQueue(chunk=subset_size)
    policy = IDPA(horizon=horizon_for(subset_size, fastest_rate), min_chunk=min(64, subset_size),
                  max_chunk=subset_size)
    policy.probe_size = probe_size if epoch == 0 else subset_size
    if policy.probe_size is not None:
        policy.probe_size = min(policy.probe_size, subset_size)
    return policy


SLOW_FACTOR = 4.0  # a range outstanding 4x longer than its worker's rate predicts is moved
MIN_OVERDUE = 10.0  # ... but never before this many seconds
UNMEASURED_OVERDUE = 60.0  # a range held this long by a worker no one has measured is moved


def overdue(held_for: float, size: int, rate: float | None, slowest: float | None) -> str | None:
    """Why a range held `held_for` seconds by a live worker should move to another, or None.

    rate: the holder's measured samples/s; slowest: the slowest rate measured in the cluster.
    A worker that never completed a task has no rate (its probe message was lost, or its pool
    process hung): it is judged by the slowest worker that has one, or by UNMEASURED_OVERDUE
    when none has; before, such a range was never moved and its epoch waited forever."""
    basis = rate or slowest
    limit = max(MIN_OVERDUE, SLOW_FACTOR * size / basis) if basis else UNMEASURED_OVERDUE
    if held_for <= limit:
        return None
    if rate:
        return f"held {held_for:.1f}s, {SLOW_FACTOR:g}x its predicted time"
    return f"held {held_for:.1f}s without the worker ever completing a task"
