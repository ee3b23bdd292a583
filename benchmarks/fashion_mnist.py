"""The default recipe on real data: Fashion-MNIST (../shared/datasets/fashion-mnist.npz, the
canonical 60k/10k split, uint8, Keras layout), the registry's LeNet-5, bpt's defaults, at 1
and 4 workers, against one plain PyTorch process with the same recipe, side by side in one
run. Published LeNet-5-class CNNs reach about 89-91% on it.

    python -m benchmarks.fashion_mnist [--epochs 10] [--workers 1 4] [--seeds 0 1 2]

Prints a table (test accuracy and wall seconds per seed, and the medians) and writes
benchmarks/results/fashion_mnist.json. Skips with a reason when the file is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare

from .accuracy import plain_pytorch
from .common import local_cluster, run_bpt_job, table, write_json

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "fashion-mnist.npz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BPT_FASHION_MNIST", DATA))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if not os.path.isfile(args.data):
        sys.exit(f"skipped: {args.data} not found (the shared Fashion-MNIST file; or pass --data)")
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for seed in args.seeds:
        spec, data, _ = prepare(JobChoices(DatasetSpec(args.data, seed=seed), epochs=args.epochs, seed=seed))
        one = plain_pytorch(spec, data, seed)
        rows.append({"system": "one PyTorch process", "workers": 1, "seed": seed,
                     "accuracy": one["test_accuracy"], "wall_s": one["wall_seconds"]})
    for k in args.workers:
        with local_cluster(k) as (settings, app, client):
            for seed in args.seeds:
                spec, data, weights = prepare(JobChoices(DatasetSpec(args.data, seed=seed), epochs=args.epochs,
                                                         seed=seed, workers=k))
                m = run_bpt_job(settings, app, client, spec, data, weights)
                noise = m.get("noise_scale") or {}
                rows.append({"system": f"bpt {spec.rule.kind}", "workers": k, "seed": seed,
                             "accuracy": m["test_accuracy"], "wall_s": m["wall_seconds"],
                             "rejected": m["rejected_pushes"], "versions": m["versions"],
                             "noise_samples": noise.get("samples"), "workers_help": noise.get("workers_that_help")})
    medians = []
    for system, k in dict.fromkeys((r["system"], r["workers"]) for r in rows):
        group = [r for r in rows if r["system"] == system and r["workers"] == k]
        medians.append({"system": system, "workers": k, "seed": "median",
                        "accuracy": statistics.median(r["accuracy"] for r in group),
                        "wall_s": statistics.median(r["wall_s"] for r in group)})
    print(f"Fashion-MNIST, {spec.model}, {args.epochs} epochs, batch {spec.train.batch_size}, lr {spec.train.lr} "
          f"{spec.train.lr_schedule}, momentum {spec.train.momentum}, subsets of {spec.subset_size}")
    print(table(rows + medians, ["system", "workers", "seed", "accuracy", "wall_s", "rejected", "versions",
                                 "noise_samples", "workers_help"]))
    print("wrote", write_json("fashion_mnist", {"args": vars(args), "rows": rows, "medians": medians,
                                                "recipe": {"lr": spec.train.lr, "schedule": spec.train.lr_schedule,
                                                           "momentum": spec.train.momentum,
                                                           "batch": spec.train.batch_size,
                                                           "subset_size": spec.subset_size}}))


if __name__ == "__main__":
    main()
