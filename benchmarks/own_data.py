"""A user's own CNN on their own images: a declarative network (examples/models/small-cnn16.json)
on a folder of 3,000 16x16 RGB PNGs of a rule a linear model cannot learn
(bpt.data.image_folder.glyphs), against logistic regression and one PyTorch process on the same
split, and bpt at 2 workers with several recipes, side by side in one run.

    python -m benchmarks.own_data [--workers 2] [--seed 0]

Reports test accuracy and wall seconds; writes benchmarks/results/own_data.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

from bpt.data import image_folder
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare

from .accuracy import plain_pytorch
from .common import local_cluster, run_bpt_job, table, write_json

MODEL = "examples/models/small-cnn16.json"
RECIPES = [  # (label, epochs, choices)
    ("adamw 0.003", 12, dict(optimizer="adamw", lr=0.003)),
    ("adamw 0.003", 24, dict(optimizer="adamw", lr=0.003)),
    ("adamw 0.003, rule agwu", 12, dict(optimizer="adamw", lr=0.003, rule="agwu")),
    ("sgd 0.05 constant (the default before issue 23)", 12, dict(lr=0.05, lr_schedule="constant")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression

    folder = tempfile.mkdtemp(prefix="bpt-glyphs-")
    x, y = image_folder.glyphs(3000, size=16, seed=args.seed)
    image_folder.write_folder(folder, x, y)
    dataset = DatasetSpec(folder, size=16, seed=args.seed)
    rows = []
    spec, data, _ = prepare(JobChoices(dataset, model=MODEL, epochs=12, seed=args.seed))
    began = time.perf_counter()
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    baseline = LogisticRegression(max_iter=2000).fit(flat(data.x_train), data.y_train)
    rows.append({"run": "logistic regression", "epochs": "-", "workers": 1,
                 "accuracy": baseline.score(flat(data.x_test), data.y_test), "wall_s": time.perf_counter() - began})
    for label, epochs, choices in RECIPES[:1] + RECIPES[3:]:
        spec, data, _ = prepare(JobChoices(dataset, model=MODEL, epochs=epochs, seed=args.seed, **choices))
        one = plain_pytorch(spec, data, args.seed)
        rows.append({"run": f"one process, {label}", "epochs": epochs, "workers": 1,
                     "accuracy": one["test_accuracy"], "wall_s": one["wall_seconds"]})
    with local_cluster(args.workers) as (settings, app, client):
        for label, epochs, choices in RECIPES:
            spec, data, weights = prepare(JobChoices(dataset, model=MODEL, epochs=epochs, seed=args.seed,
                                                     workers=args.workers, **choices))
            metrics = run_bpt_job(settings, app, client, spec, data, weights)
            rows.append({"run": f"bpt, {label}", "epochs": epochs, "workers": args.workers,
                         "accuracy": metrics["test_accuracy"], "wall_s": metrics["wall_seconds"]})
    print(f"3,000 16x16 RGB glyph images (PNG folder), {MODEL}, seed {args.seed}: test accuracy")
    print(table(rows, ["run", "epochs", "workers", "accuracy", "wall_s"]))
    write_json("own_data", {"args": vars(args), "rows": rows, "spec": dataclasses.asdict(spec)})


if __name__ == "__main__":
    main()
