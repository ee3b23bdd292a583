"""The asynchronous merge rules' one interface: a pure step (rule state, push) -> (new state, scale).

Why state: a rule that learns something from the pushes it merges (a running estimate, a
count) needs memory across pushes. The weight store keeps that memory with the weights: a
push's step reads the state of the version it merges onto (the same pull that read the
weights), and push.lua installs the new state in the same compare-and-set as the new
weights, so two pushers never build on one state and no pull sees one version's weights
with another's state. The emulator (bpt.plan.emulator) calls the same step, so what it
measures is what the store applies; a checkpoint carries the state with the weights.

State is a small JSON object of numbers (the weights hash's `rule` field). A rule that
keeps tensors (server momentum, a buffer of deltas) does not fit it: the candidates of
that kind measured in the emulator (FedBuff, outer Nesterov, semi-synchronous rounds:
docs/scaling.md) gave nothing that paid for a weights-sized state in every pull.

The scalar rules stay one-liners; a refused push (too stale) changes no state, since
nothing is installed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable, Mapping

from bpt.train import noise_scale
from bpt.train.merge import MergeRule
from bpt.train.noise_scale import GradStats

State = Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class Push:
    """What the store knows of one push when it merges it."""

    staleness: int  # versions applied since the pusher's pull
    q: float  # accuracy weight (merge.accuracy_weight)
    live: int = 1  # training processes in the cluster now
    # the job's progress in [0, 1]: in the store where the pulled version places the task
    # (JobSpec.progress), in the emulator the samples merged so far; the same in steady state
    progress: float = 1.0
    stats: GradStats | None = None  # the gradient statistics its task measured (noise_scale)


Step = Callable[[MergeRule, State, Push], "tuple[State, float]"]

USES_STATS = ("adascale",)  # rules whose step reads the pushes' gradient statistics
ADASCALE_MEMORY = 32  # pushes: a running mean of the statistics over the first 32, then exponential with this span


def adascale(rule: MergeRule, state: State, push: Push) -> tuple[State, float]:
    """AdaScale's gain ratio (Johnson et al., ICML 2020) for K pushes merged as one K-fold
    batch: r = (s2 + g2) / (s2 / K + g2), s2 the variance of one worker's batch gradient and
    g2 |G|^2, estimated from the gradient statistics the workers push (McCandlish et al.'s
    two-batch estimator, bpt.train.noise_scale) averaged over the pushes with a memory of
    ADASCALE_MEMORY (the statistics drift as training goes on); the push's scale is
    alpha * q * r / K, between normalized's q / K (r = 1: signal dominates, averaging is all K
    workers buy) and plain async's q (r = K: noise dominates, K workers' steps add up). r is 1 while there is no estimate: before the first statistics,
    when noise swamps the signal (the estimator's |G|^2 <= 0: AdaScale would say K, but a
    full asynchronous step is what diverges, docs/scaling.md), and on workers whose inner
    strategy does not measure gradients (`--inner tasks`): then the rule is normalized.
    Statistics that are not finite and positive are left out, so one overflowing task cannot
    poison the state of every push after it."""
    state = dict(state)
    if noise_scale.usable(push.stats):
        n = min(state.get("n", 0.0) + 1, ADASCALE_MEMORY)
        for name, value in (("small", push.stats.small), ("big", push.stats.big), ("batch", push.stats.batch),
                            ("big_batch", push.stats.batch * push.stats.batches)):
            state[name] = state.get(name, 0.0) + (value - state.get(name, 0.0)) / n
        state["n"] = n
    k, gain = max(1, push.live), 1.0
    if state.get("n"):
        estimate = noise_scale.estimate(state["small"], state["big"], int(round(state["batch"])), state["big_batch"])
        if estimate is not None:
            # s2 / g2 for a worker's batch: B_noise / b
            ratio = estimate.noise_batch / state["big_batch"]
            gain = min(float(k), (ratio + 1) / (ratio / k + 1))
    state["gain"] = gain
    return state, rule.alpha * push.q * gain / k


STEPS: dict[str, Step] = {
    "normalized": lambda rule, state, push: (state, rule.alpha * push.q / max(1, push.live)),
    "agwu": lambda rule, state, push: (state, rule.alpha * rule.gamma ** push.staleness * push.q),
    "async": lambda rule, state, push: (state, rule.alpha),
    "adascale": adascale,
}


def step(rule: MergeRule, state: State, push: Push) -> tuple[dict, float | None]:
    """The rule's new state and the scale on the push's delta (W += scale * D), or None with
    the state unchanged when the push is too stale for the rule."""
    if push.staleness < 0:
        raise ValueError(f"staleness cannot be negative, got {push.staleness}")
    if rule.kind not in STEPS:
        raise ValueError(f"rule {rule.kind!r} merges rounds, not single pushes")
    if push.staleness > rule.staleness_bound(push.live):
        return dict(state), None
    new, scale = STEPS[rule.kind](rule, state, push)
    return dict(new), scale


def contribution(rule: MergeRule, staleness: int, q: float, live: int = 1, progress: float = 1.0) -> float | None:
    """The scale a rule that keeps no state applies to D_j, or None when the push must be
    rejected as too stale: `step` with an empty state.

    live: the training processes in the cluster now (the worker registry's count).

    - normalized: alpha * q / live. With K workers in steady state every push is about K - 1
      versions stale, and K deltas computed from nearly the same weights arrive for every
      one a single process would have made: together they count as one step, as a
      synchronous round's average would, whatever K is (docs/scaling.md);
    - agwu (the paper's): alpha * gamma**s * q, which at s ~ K - 1 is ~1e-4 at 16 workers;
    - async: alpha.
    """
    return step(rule, {}, Push(staleness, q, live, progress))[1]


def encode(state: State) -> str:
    """The state as stored (the weights hash's `rule` field); '' for none."""
    return json.dumps(dict(state), sort_keys=True) if state else ""


def decode(raw: bytes | str | None) -> dict:
    """The stored state; {} for none or an unreadable one (a rule then starts afresh)."""
    if not raw:
        return {}
    try:
        state = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(state, dict):
        return {}
    kept = {}
    for k, v in state.items():
        try:
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                kept[k] = float(v)
        except OverflowError:  # an integer too large for a float
            pass
    return kept
