"""Accuracy check: the same model, data, epochs and batch size trained (a) in one plain
PyTorch process and (b) with bpt at 2 workers (AGWU), side by side in one run.

    python -m benchmarks.accuracy [--seeds 0 1 2] [--epochs 20]

Goal (issue 3): bpt >= 97% test accuracy on digits, within 1 point of (a).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bpt.train import inner
from bpt.model import registry as models
from bpt.train import training
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare

from .common import local_cluster, run_bpt_job, table, write_json


def plain_pytorch(spec, data, seed: int) -> dict:
    """One process, one optimizer, the same SGD settings and batch size as the bpt job."""
    model = models.build_for(spec, seed=seed)
    stepper = inner.make_stepper("torch", model, spec.train, torch.get_num_threads())
    began = time.perf_counter()
    for epoch in range(spec.epochs):
        stepper.set_lr(spec.lr_at(epoch, (epoch + 0.5) * spec.n_subsets))  # the schedule, once an epoch
        training.train_pass(stepper, data.x_train, data.y_train, spec.train.batch_size, seed=seed + epoch,
                            augment=spec.train.augment)
    wall = time.perf_counter() - began
    _, accuracy = training.evaluate(model, data.x_test, data.y_test)
    return {"test_accuracy": accuracy, "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    rows = []
    torch.set_num_threads(args.workers)  # the baseline may use every core, as bpt's workers do
    with local_cluster(args.workers) as (settings, app, client):
        for seed in args.seeds:
            choices = JobChoices(DatasetSpec(args.dataset, seed=seed), epochs=args.epochs, seed=seed,
                                 workers=args.workers)
            spec, data, weights = prepare(choices)
            base = plain_pytorch(spec, data, seed)
            dist = run_bpt_job(settings, app, client, spec, data, weights)
            rows.append({"seed": seed, "pytorch_acc": base["test_accuracy"], "bpt_acc": dist["test_accuracy"],
                         "gap_points": 100 * (base["test_accuracy"] - dist["test_accuracy"]),
                         "pytorch_s": base["wall_seconds"], "bpt_s": dist["wall_seconds"],
                         "rejected": dist["rejected_pushes"], "versions": dist["versions"]})
    median = {k: statistics.median(r[k] for r in rows) for k in ("pytorch_acc", "bpt_acc", "gap_points", "pytorch_s", "bpt_s")}
    rows.append({"seed": "median", **median})
    print(f"{args.dataset}, {spec.model}, {args.epochs} epochs, batch {spec.train.batch_size}, "
          f"bpt with {args.workers} workers, rule {spec.rule.kind}")
    print(table(rows, ["seed", "pytorch_acc", "bpt_acc", "gap_points", "pytorch_s", "bpt_s", "rejected", "versions"]))
    goal = median["bpt_acc"] >= 0.97 and median["gap_points"] <= 1.0
    print(f"goal (bpt >= 0.97 and within 1 point): {'met' if goal else 'NOT met'}")
    print("wrote", write_json("accuracy", {"rows": rows, "goal_met": goal, "args": vars(args)}))


if __name__ == "__main__":
    main()
