"""Small data at equal epochs: does the default lose accuracy as workers are added, and does
the job say so? Issue 25's small-data acceptance: on digits, the glyph folder (3,000 16x16
images, 10 classes) and a new user's 3-class folder (600 images), at K = 2 and 4 the
default ends within 1 point of one process (bpt at K = 1, the same code and recipe) at
equal epochs, or its warning fired.

    python -m benchmarks.small_data [--workers 1 2 3 4] [--seeds 0 1 2] [--cases ...]

Each job: the dataset's default epochs (digits 20, folders 12), the default rule; digits
with its model's own recipe, the folders with examples/models/small-cnn16.json and AdamW
0.003, cosine, x sqrt(K) (as benchmarks.guardrail and benchmarks.own_data). For each job:
test accuracy, the job's noise-scale estimate (latest epochs, as `bpt status` shows it) and
the first epoch's, and the three warnings: `scaling_warning` (the noise scale), an epoch
with fewer subsets than workers (`bpt train` prints it at submit), and "still learning when
its epochs ran out" (bpt.train.learning). A K > 1 row is met when its median is within 1
point of K = 1's or every seed warned. Writes benchmarks/results/small_data.json.
"""

from __future__ import annotations

import argparse
import statistics

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import JobStore
from bpt.plan.partition import subsets
from bpt.train import noise_scale

from .common import local_cluster, run_bpt_job, table, write_json
from .guardrail import MODEL, folder

FOLDER_RECIPE = dict(model=MODEL, optimizer="adamw", lr=0.003, lr_schedule="cosine", lr_scaling="sqrt", epochs=12)
CASES = {  # name: (images, classes) for a folder; None for digits
    "digits": None,
    "glyphs": (3000, 10),
    "3-class folder": (600, 3),
}


def choices_for(case: str, seed: int, workers: int) -> JobChoices:
    if CASES[case] is None:
        return JobChoices(DatasetSpec("digits", seed=seed), seed=seed, workers=workers)
    images, classes = CASES[case]
    return JobChoices(DatasetSpec(folder(images, classes, seed), size=16, seed=seed), seed=seed, workers=workers,
                      **FOLDER_RECIPE)


def first_epoch_estimate(sums: dict, n_train: int) -> noise_scale.NoiseEstimate | None:
    """The estimate from the job's first epoch alone (what a warning "early in the run" sees),
    capped at the training set as the job's own is (NoiseEstimate.within)."""
    epochs = noise_scale.measured_epochs(sums)
    return noise_scale.from_sums(noise_scale.epoch_sums(sums, min(epochs)), n_train) if epochs else None


def run(cases: list[str], workers: list[int], seeds: list[int]) -> list[dict]:
    rows = []
    for k in workers:
        with local_cluster(k) as (settings, app, client):
            for case in cases:
                for seed in seeds:
                    spec, data, weights = prepare(choices_for(case, seed, k))
                    m = run_bpt_job(settings, app, client, spec, data, weights)
                    sums = JobStore(client, spec.job_id).gradient_sums()
                    first = first_epoch_estimate(sums, data.n_train)
                    latest = m.get("noise_scale") or {}
                    per_epoch = len(subsets(data.n_train, spec.subset_size))
                    rows.append({"case": case, "workers": k, "seed": seed, "accuracy": m["test_accuracy"],
                                 "epochs": spec.epochs, "subsets_per_epoch": per_epoch,
                                 "noise_samples": latest.get("samples"), "workers_help": latest.get("workers_that_help"),
                                 "first_epoch_samples": round(first.noise_batch, 1) if first else None,
                                 "first_epoch_help": first.workers if first else None,
                                 "scaling_warning": bool(m.get("scaling_warning")),
                                 "still_learning": "still learning" in (m.get("warning") or ""),
                                 "val_curve": [round(e["val_accuracy"], 3) for e in m["evaluations"]
                                               if e.get("val_accuracy") is not None],
                                 "too_few_subsets": noise_scale.too_few_subsets(per_epoch, k) is not None})
                    print(rows[-1], flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        one = [r["accuracy"] for r in rows if r["case"] == case and r["workers"] == 1]
        base = statistics.median(one) if one else None
        for k in sorted({r["workers"] for r in rows if r["case"] == case}):
            mine = [r for r in rows if r["case"] == case and r["workers"] == k]
            median = statistics.median(r["accuracy"] for r in mine)
            warned = sum(r["scaling_warning"] or r["too_few_subsets"] or r["still_learning"] for r in mine)
            gap = None if base is None else round(100 * (base - median), 2)
            out.append({"case": case, "workers": k, "median": median, "points_below_one": gap,
                        "warned": f"{warned}/{len(mine)}",
                        "met": None if k == 1 or gap is None else (gap <= 1.0 or warned == len(mine))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    rows = run(args.cases, args.workers, args.seeds)
    summary = summarise(rows)
    print(table(rows, ["case", "workers", "seed", "accuracy", "subsets_per_epoch", "noise_samples", "workers_help",
                       "first_epoch_samples", "first_epoch_help", "scaling_warning", "too_few_subsets",
                       "still_learning"]))
    print(table(summary, ["case", "workers", "median", "points_below_one", "warned", "met"]))
    print("wrote", write_json("small_data", {"args": vars(args), "rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()
