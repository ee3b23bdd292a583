"""Candidate merge rules for more speed-up per worker (issue 25), tried in the emulator on
Fashion-MNIST before any is built into the store: each a one-line change of the server's
step, measured on the time-to-accuracy clock (benchmarks.time_to_accuracy's costs, subsets
of 256, LeNet-5, lr 0.02 constant, momentum 0.9, target 87% test accuracy, 12 epochs at most).

    python -m benchmarks.rule_candidates [--workers 4] [--eval-every 4000]
    python -m benchmarks.rule_candidates --second [--only PREFIX ...]    # the second set (below)

(docs/scaling.md's table of the second set was taken with --eval-every 1000.)

Candidates (`gain` is the server's step after a 30,000-sample warm-up, rising from 1 / K):
- normalized: W += q D / K (the default);
- gain sqrt(K): W += q sqrt(K) D / K;
- gain K: W += q D (plain asynchronous steps), with the workers' momentum 0.9 or 0;
- FedBuff: the mean of every K pushes applied at server lr 2;
- local SGD rounds at outer lr 2 and 4 (bpt.plan.baselines.local_sgd), and DDP's recipe beside.
Prints one JSON line per run (samples and virtual seconds to target, best and final accuracy).

The second set (`--second`, 2026-12-05) gives every system the job's own 30,000-sample lr
warm-up instead of a rising gain, and stops a run that fell below 30% (or 15 points under its
best) after 60,000 samples as diverged:
- full deltas (rule `async`) with the workers' momentum lowered to compensate for the
  momentum asynchrony adds (Mitliagkas et al. 2016: about 1 - 1/K), 0.5 and 0, at larger lrs;
- FedBuff with a K-push buffer at server lr 1 (the issue's "staleness 0-1");
- normalized without the accuracy weight q (every q = 1);
- semi-synchronous rounds (emulator.Buffered(barrier=True)): the average of a round's pushes
  is one version; a worker waits for the next flush instead of training again from weights it
  already trained from; a round closes when every worker has pushed or, once all but one
  have, at once if the missing one's measured rate puts its push more than a quarter of a task
  away, else after a quarter of a task at most (a late push joins the next round);
- local SGD rounds (outer lr 1) at its tuned lr beside them, and the default, local SGD and
  semi-synchronous rounds with one worker 3x slower;
- (2026-12-06) AdaScale's gain ratio (rule `adascale`, bpt.train.rule_step): normalized's
  push times r in [1, K] from the gradient statistics the workers measure, at base lrs 0.01
  and 0.02 (no lr scaling: the gain is the scaling), and with one worker 3x slower;
- (2026-12-06) DiLoCo's outer optimizer on the semi-synchronous rounds: each round's average
  is a Nesterov step, momentum 0.9, at outer lr 0.7 (DiLoCo's) and 0.2;
- (2026-12-06) an asynchronous Adasum (bpt.train.adasum): a full delta combined with the
  updates applied since its pull, so orthogonal updates add and agreeing ones average, at
  base lrs 0.01, 0.02 and 0.05, and with one worker 3x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from bpt.plan import baselines
from bpt.data import datasets
from bpt.plan import emulator
from bpt.train import merge, rule_step
from bpt.model import registry as models
from bpt.train import training

from .time_to_accuracy import DATA, cluster_for, load_costs

WARMUP = 30_000


def gained(exponent: float, warm_share: float):
    """normalized's step with its scale growing from 1 / K to K^exponent / K over the warm-up."""
    def normalized(rule, state, push):
        gain = 1 + (push.live ** exponent - 1) * min(1.0, push.progress / warm_share)
        return state, rule.alpha * push.q * gain / max(1, push.live)
    return normalized


# The second set: (name, rule, base lr, workers' momentum, options). Options: "scaling"
# (the workers' lr scaling, default none), "q" (False: every push's q is 1), "cluster" ("slow": one
# worker 3x slower). Rules: a merge rule, "local" (local SGD), "buffer" (FedBuff), "semisync",
# "adasum" (rule async, each push combined by bpt.train.adasum).
SECOND = [
    ("local SGD rounds, outer lr 1", "local", 0.05, 0.9, {}),
    ("normalized (the default), lr x sqrt(K)", "normalized", 0.02, 0.9, {"scaling": "sqrt"}),
    ("normalized, every q = 1", "normalized", 0.02, 0.9, {"scaling": "sqrt", "q": False}),
    ("full deltas, local momentum 0.9", "async", 0.005, 0.9, {}),
    ("full deltas, local momentum 0.5", "async", 0.01, 0.5, {}),
    ("full deltas, local momentum 0.5", "async", 0.03, 0.5, {}),
    ("full deltas, local momentum 0", "async", 0.05, 0.0, {}),
    ("full deltas, local momentum 0", "async", 0.1, 0.0, {}),
    ("FedBuff, K pushes, server lr 1", "buffer", 0.02, 0.9, {}),
    ("FedBuff, K pushes, server lr 1", "buffer", 0.05, 0.9, {}),
    ("semi-synchronous rounds", "semisync", 0.05, 0.9, {}),
    ("semi-synchronous rounds, lr x sqrt(K)", "semisync", 0.02, 0.9, {"scaling": "sqrt"}),
    ("normalized (the default), one worker 3x slower", "normalized", 0.02, 0.9, {"scaling": "sqrt", "cluster": "slow"}),
    ("local SGD rounds, one worker 3x slower", "local", 0.05, 0.9, {"cluster": "slow"}),
    ("semi-synchronous rounds, one worker 3x slower", "semisync", 0.05, 0.9, {"cluster": "slow"}),
    # 2026-12-06: the first rule with state in the store (bpt.train.rule_step), workers at the base lr
    ("AdaScale gain ratio", "adascale", 0.01, 0.9, {}),
    ("AdaScale gain ratio", "adascale", 0.02, 0.9, {}),
    ("AdaScale gain ratio, one worker 3x slower", "adascale", 0.02, 0.9, {"cluster": "slow"}),
    # 2026-12-06: DiLoCo's outer Nesterov (Douillard et al. 2023) on the semi-synchronous rounds
    ("semi-synchronous rounds, outer Nesterov 0.9", "semisync", 0.05, 0.9, {"outer_lr": 0.7, "outer_momentum": 0.9}),
    ("semi-synchronous rounds, outer Nesterov 0.9", "semisync", 0.05, 0.9, {"outer_lr": 0.2, "outer_momentum": 0.9}),
    # 2026-12-06: an asynchronous Adasum (bpt.train.adasum): each full delta combined with the
    # updates applied since its pull, workers at the base lr
    ("asynchronous Adasum", "adasum", 0.01, 0.9, {}),
    ("asynchronous Adasum", "adasum", 0.02, 0.9, {}),
    ("asynchronous Adasum", "adasum", 0.05, 0.9, {}),
    ("asynchronous Adasum, one worker 3x slower", "adasum", 0.02, 0.9, {"cluster": "slow"}),
]


class Diverged(Exception):
    pass


def second(data, costs: dict, k: int, eval_every: int, only: list[str]) -> None:
    """The second set of candidates (module docstring), one JSON line each; only: the
    candidates whose names start with one of these (all if empty)."""
    epochs, target, real_q = 12, 0.87, merge.accuracy_weight
    for name, rule, lr, momentum, options in SECOND:
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        job = emulator.Job("lenet5", data.input_shape, 10, epochs=epochs, subset_size=256, seed=0,
                           train=training.TrainParams(32, lr, momentum, lr_schedule="constant",
                                                      warmup_epochs=WARMUP / len(data.x_train),
                                                      lr_scaling=options.get("scaling", "none")),
                           rule=merge.MergeRule("async" if rule == "adasum" else rule if rule in merge.RULES else "normalized"),
                           adasum=rule == "adasum",
                           buffer=emulator.Buffered(0, options.get("outer_lr", 1.0),
                                                    options.get("outer_momentum", 0.0), barrier=rule == "semisync")
                           if rule in ("buffer", "semisync") else None)
        cluster = cluster_for(options.get("cluster", "equal"), k, costs, 0)
        initial = training.state_to_numpy(models.build_for(job, seed=0))
        best = [0.0]

        def watch(at: int, accuracy: float) -> None:
            best[0] = max(best[0], accuracy)
            if at >= 60_000 and (accuracy < 0.3 or accuracy < best[0] - 0.15):
                raise Diverged

        began, common = time.perf_counter(), dict(eval_every=eval_every, target=target, screen=1000)
        merge.accuracy_weight = real_q if options.get("q", True) else (lambda accuracy, recent: 1.0)
        try:
            if rule == "local":
                curve = baselines.local_sgd(job, cluster, data, initial, **common)
            else:
                curve = emulator.emulate(job, cluster, data, initial, on_eval=watch, **common)
            result = {"samples_to_target": curve.samples_to(target), "seconds_to_target": curve.seconds_to(target),
                      "best": round(max(curve.accuracy), 4), "final": round(curve.final_accuracy, 4),
                      **({"rule_state": curve.rule_state} if getattr(curve, "rule_state", None) else {})}
        except Diverged:
            result = {"samples_to_target": None, "diverged": True, "best": round(best[0], 4)}
        finally:
            merge.accuracy_weight = real_q
        print(json.dumps({"candidate": name, "workers": k, "cluster": options.get("cluster", "equal"), "lr": lr,
                          "momentum": momentum, **{o: options[o] for o in ("outer_lr", "outer_momentum") if o in options},
                          **result,
                          "wall_s": round(time.perf_counter() - began)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BPT_FASHION_MNIST", DATA))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=4000)
    parser.add_argument("--second", action="store_true", help="Run the second set of candidates (2026-12-05).")
    parser.add_argument("--only", nargs="+", default=[], metavar="PREFIX",
                        help="With --second: only the candidates whose names start with one of these.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = datasets.load(datasets.DatasetSpec(args.data, seed=0))
    costs = load_costs()
    if args.second:
        second(data, costs, args.workers, args.eval_every, args.only)
        return
    k, epochs, target = args.workers, 12, 0.87
    warm_share = WARMUP / (epochs * len(data.x_train))
    real = rule_step.STEPS["normalized"]
    runs = [("one process (DDP K=1)", {}), ("ddp", {}), ("normalized", {}), ("gain sqrt(K)", {"e": 0.5}),
            ("gain K", {"e": 1.0}), ("gain K, local momentum 0", {"e": 1.0, "mom": 0.0}),
            ("fedbuff, server lr 2", {"buf": 2.0}), ("local SGD, outer lr 2", {"outer": 2.0}),
            ("local SGD, outer lr 4", {"outer": 4.0})]
    for name, kw in runs:
        job = emulator.Job("lenet5", data.input_shape, 10, epochs=epochs, subset_size=256, seed=0,
                           train=training.TrainParams(32, 0.02, kw.get("mom", 0.9), lr_schedule="constant",
                                                      lr_scaling="none"),
                           buffer=emulator.Buffered(0, kw["buf"]) if "buf" in kw else None)
        initial = training.state_to_numpy(models.build_for(job, seed=0))
        began, common = time.perf_counter(), dict(eval_every=args.eval_every, target=target, screen=1000)
        rule_step.STEPS["normalized"] = gained(kw["e"], warm_share) if "e" in kw else real
        try:
            if name.startswith("one process"):
                curve = baselines.ddp(job, cluster_for("equal", 1, costs, 0), data, initial, lr=0.02, warmup_samples=0,
                                      **common)
            elif name == "ddp":
                curve = baselines.ddp(job, cluster_for("equal", k, costs, 0), data, initial, lr=0.02 * k,
                                      warmup_samples=WARMUP, **common)
            elif "outer" in kw:
                curve = baselines.local_sgd(job, cluster_for("equal", k, costs, 0), data, initial, outer_lr=kw["outer"],
                                            outer_warmup=WARMUP, **common)
            else:
                curve = emulator.emulate(job, cluster_for("equal", k, costs, 0), data, initial, **common)
        finally:
            rule_step.STEPS["normalized"] = real
        print(json.dumps({"candidate": name, "workers": 1 if name.startswith("one") else k,
                          "samples_to_target": curve.samples_to(target), "seconds_to_target": curve.seconds_to(target),
                          "best": round(max(curve.accuracy), 4), "final": round(curve.final_accuracy, 4),
                          "wall_s": round(time.perf_counter() - began)}), flush=True)


if __name__ == "__main__":
    main()
