"""A discrete-event simulator of one epoch on N heterogeneous nodes (pure, seeded, no Redis).

It runs the same policy objects as bpt.plan.idpa: nodes with true throughputs drawn from a
distribution, a per-task overhead and weight-transfer cost, optional failures (a node dies,
its queued and running work is lost and handed out again once its heartbeat times out) and
joins. The policies see only what the real scheduler sees: measured throughputs
(exponentially weighted, overheads included) and queued samples.

The ideal bound is the earliest time at which the cluster's live capacity, integrated over
time, covers the epoch: N / sum(r_i) without failures or joins.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections import deque

from bpt.plan.idpa import IDPA, POLICIES, NodeView, Ranges, build_policy
from bpt.plan.partition import default_subset_size

EWMA = 0.5  # weight of the newest task in a node's measured throughput


@dataclasses.dataclass(frozen=True)
class SimConfig:
    nodes: int = 10
    samples_per_node: int = 100_000
    dist: str = "lognormal"  # lognormal | uniform | constant
    mean_rate: float = 1000.0  # samples/s
    sigma: float = 0.5  # lognormal shape
    failures: float = 0.0  # fraction of nodes that die during the epoch
    joins: float = 0.0  # fraction of nodes that join late
    overhead: float = 0.02  # seconds per task (queueing, pull, push)
    transfer: float = 0.01  # seconds per task to move the weights
    heartbeat_timeout: float = 5.0
    tick: float = 0.5  # seconds between scheduler rounds
    chunk: int | None = None  # the job's subset size (None: what bpt train picks for this many samples,
    # partition.default_subset_size); every policy is built from it by idpa.build_policy, as a real job's
    seed: int = 0

    @property
    def samples(self) -> int:
        return self.nodes * self.samples_per_node

    @property
    def subset_size(self) -> int:
        return self.chunk or default_subset_size(self.samples)


@dataclasses.dataclass(frozen=True)
class SimResult:
    policy: str
    makespan: float
    ideal: float
    tasks: int
    reassigned_samples: int

    @property
    def ratio(self) -> float:
        return self.makespan / self.ideal


def draw_rates(cfg: SimConfig, rng: random.Random) -> list[float]:
    if cfg.dist == "constant":
        return [cfg.mean_rate] * cfg.nodes
    if cfg.dist == "uniform":
        return [rng.uniform(0.2, 1.8) * cfg.mean_rate for _ in range(cfg.nodes)]
    if cfg.dist == "lognormal":  # scaled so that the mean is mean_rate
        mu = math.log(cfg.mean_rate) - cfg.sigma ** 2 / 2
        return [rng.lognormvariate(mu, cfg.sigma) for _ in range(cfg.nodes)]
    raise ValueError(f"unknown distribution {cfg.dist!r}; choose lognormal, uniform or constant")


def _timeline(cfg: SimConfig, rates: list[float], rng: random.Random):
    """When each node joins and dies (None: never)."""
    base = cfg.samples / sum(rates)
    order = list(range(cfg.nodes))
    rng.shuffle(order)
    n_fail, n_join = round(cfg.failures * cfg.nodes), round(cfg.joins * cfg.nodes)
    joins = {i: rng.uniform(0, 0.5 * base) for i in order[:n_join]}
    deaths = {i: rng.uniform(0.1, 0.9) * base + joins.get(i, 0) for i in order[n_join:n_join + n_fail]}
    return joins, deaths


def ideal_bound(samples: int, rates: list[float], joins: dict, deaths: dict) -> float:
    """Earliest t with the integral of live capacity reaching samples."""
    changes = sorted([(joins.get(i, 0.0), r) for i, r in enumerate(rates)] +
                     [(t, -rates[i]) for i, t in deaths.items()])
    capacity, t, left = 0.0, 0.0, float(samples)
    for when, delta in changes:
        if capacity > 0 and capacity * (when - t) >= left:
            return t + left / capacity
        left -= capacity * (when - t)
        t, capacity = when, capacity + delta
    return t + left / capacity if capacity > 0 else math.inf


class _Node:
    def __init__(self, name: str, rate: float):
        self.name, self.rate = name, rate
        self.alive, self.measured, self.busy = False, None, False
        self.queue: deque = deque()
        self.queued = 0


def simulate(cfg: SimConfig, policy_name: str) -> SimResult:
    rng = random.Random(cfg.seed)
    rates = draw_rates(cfg, rng)
    joins, deaths = _timeline(cfg, rates, rng)
    if policy_name not in POLICIES:
        raise ValueError(f"unknown policy {policy_name!r}; choose one of {', '.join(POLICIES)}")
    probe = {"size": None}  # IDPA's probe size, kept across rounds as the scheduler keeps it
    nodes = [_Node(f"n{i}", r) for i, r in enumerate(rates)]
    ranges = Ranges(cfg.samples)
    events: list = []
    seq = 0

    def push(t, kind, node=None, payload=None):
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, node, payload))

    for i, node in enumerate(nodes):
        push(joins.get(i, 0.0), "join", node)
        if i in deaths:
            push(deaths[i], "fail", node)
    push(0.0, "tick")
    done, tasks, reassigned, now = 0, 0, 0, 0.0

    def start(node, t):
        if node.alive and not node.busy and node.queue:
            a = node.queue[0]
            node.busy = True
            push(t + cfg.overhead + cfg.transfer + a.size / node.rate, "done", node, (a, t))

    def schedule(t, only=None):
        live = [n for n in (only or nodes) if n.alive]
        total = sum(n.measured for n in nodes if n.alive and n.measured)
        fastest = max((n.measured for n in nodes if n.alive and n.measured), default=None)
        policy = build_policy(policy_name, cfg.subset_size, 0, probe["size"], ranges.cursor, fastest)
        assignments = policy.assign(ranges, [NodeView(n.name, n.measured, n.queued) for n in live], **_total(policy, total))
        if isinstance(policy, IDPA):
            probe["size"] = policy.probe_size
        for a in assignments:
            node = by_name[a.node]
            node.queue.append(a)
            node.queued += a.size
            start(node, t)

    by_name = {n.name: n for n in nodes}
    while events and done < cfg.samples:
        now, _, kind, node, payload = heapq.heappop(events)
        if kind == "join":
            node.alive = True
            if now > 0:
                schedule(now, [node])
        elif kind == "tick":
            schedule(now)
            push(now + cfg.tick, "tick")
        elif kind == "fail":
            node.alive = False
            push(now + cfg.heartbeat_timeout, "detect", node)
        elif kind == "detect":  # heartbeat timed out: its unfinished work goes back
            for a in node.queue:
                ranges.give_back(a.start, a.end)
                reassigned += a.size
            node.queue.clear()
            node.queued, node.busy = 0, False
            schedule(now)
        elif kind == "done" and node.alive:
            a, began = payload
            node.queue.popleft()
            node.queued -= a.size
            node.busy = False
            done += a.size
            tasks += 1
            observed = a.size / (now - began)
            node.measured = observed if node.measured is None else EWMA * observed + (1 - EWMA) * node.measured
            schedule(now, [node])
            start(node, now)
    return SimResult(policy_name, now, ideal_bound(cfg.samples, rates, joins, deaths), tasks, reassigned)


def _total(policy, total_rate: float) -> dict:
    """IDPA sizes its end-of-epoch horizon on the whole cluster's rate, also when asked
    about one node."""
    return {"total_rate": total_rate} if policy.name == "idpa" else {}
