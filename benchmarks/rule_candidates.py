"""Candidate merge rules for more speed-up per worker (issue 25), tried in the emulator on
Fashion-MNIST before any is built into the store: each a one-line change of the server's
step, measured on the time-to-accuracy clock (benchmarks.time_to_accuracy's costs, subsets
of 256, LeNet-5, lr 0.02 constant, momentum 0.9, target 87% test accuracy, 12 epochs at most).

    python -m benchmarks.rule_candidates [--workers 4] [--eval-every 4000]

Candidates (`gain` is the server's step after a 30,000-sample warm-up, rising from 1 / K):
- normalized: W += q D / K (the default);
- gain sqrt(K): W += q sqrt(K) D / K;
- gain K: W += q D (plain asynchronous steps), with the workers' momentum 0.9 or 0;
- FedBuff: the mean of every K pushes applied at server lr 2;
- local SGD rounds at outer lr 2 and 4 (bpt.plan.baselines.local_sgd), and DDP's recipe beside.
Prints one JSON line per run (samples and virtual seconds to target, best and final accuracy).
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
from bpt.train import merge
from bpt.model import registry as models
from bpt.train import training

from .time_to_accuracy import DATA, cluster_for, load_costs

WARMUP = 30_000


def gained(exponent: float, warm_share: float):
    """normalized with its step growing from 1 / K to K^exponent / K over the warm-up."""
    real = merge.contribution

    def contribution(rule, staleness, q, live=1, progress=1.0):
        if rule.kind != "normalized" or staleness > rule.staleness_bound(live):
            return real(rule, staleness, q, live, progress)
        gain = 1 + (live ** exponent - 1) * min(1.0, progress / warm_share)
        return rule.alpha * q * gain / max(1, live)
    return contribution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BPT_FASHION_MNIST", DATA))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = datasets.load(datasets.DatasetSpec(args.data, seed=0))
    costs = load_costs()
    k, epochs, target = args.workers, 12, 0.87
    warm_share = WARMUP / (epochs * len(data.x_train))
    real = merge.contribution
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
        merge.contribution = gained(kw["e"], warm_share) if "e" in kw else real
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
            merge.contribution = real
        print(json.dumps({"candidate": name, "workers": 1 if name.startswith("one") else k,
                          "samples_to_target": curve.samples_to(target), "seconds_to_target": curve.seconds_to(target),
                          "best": round(max(curve.accuracy), 4), "final": round(curve.final_accuracy, 4),
                          "wall_s": round(time.perf_counter() - began)}), flush=True)


if __name__ == "__main__":
    main()
