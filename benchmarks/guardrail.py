"""The accuracy guardrail on and off, where a noisy guardrail used to throw away good work:
a new user's 3-class folder (600 16x16 RGB PNGs) at 3 workers with one at --slowdown 3, and
the glyph folder (3,000 images, 10 classes) at 2 workers; examples/models/small-cnn16.json,
AdamW 0.003, 12 epochs, seeds 0..2, the same job with --guardrail 0.05 (the default) and 0.

    python -m benchmarks.guardrail [--seeds 0 1 2]

Goal (issue 23): on and off within 1 point (median of 3) in both. Prints a table (test
accuracy, guard level at the end, guardrail events) and writes benchmarks/results/guardrail.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np

from bpt.data import image_folder
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import JobStore

from .common import local_cluster, run_bpt_job, table, write_json

MODEL = "examples/models/small-cnn16.json"
CASES = [  # (name, images, classes, slowdowns)
    ("3-class folder, 1 of 3 workers 3x slower", 600, 3, [1.0, 1.0, 3.0]),
    ("glyphs, 2 workers", 3000, 10, [1.0, 1.0]),
]


def folder(images: int, classes: int, seed: int) -> str:
    x, y = image_folder.glyphs(images * 10 // classes + 200, size=16, seed=seed)
    keep = np.flatnonzero(y < classes)[:images]
    path = tempfile.mkdtemp(prefix="bpt-guard-")
    image_folder.write_folder(path, x[keep], y[keep])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    rows = []
    for name, images, classes, slowdowns in CASES:
        with local_cluster(len(slowdowns), slowdowns=slowdowns) as (settings, app, client):
            for seed in args.seeds:
                path = folder(images, classes, seed)
                for guard in (0.05, 0.0):
                    spec, data, weights = prepare(JobChoices(DatasetSpec(path, size=16, seed=seed), model=MODEL,
                                                             epochs=args.epochs, seed=seed, workers=len(slowdowns),
                                                             optimizer="adamw", lr=0.003, guardrail=guard,
                                                             lr_schedule="cosine", lr_scaling="sqrt"))  # as measured
                    m = run_bpt_job(settings, app, client, spec, data, weights)
                    store = JobStore(client, spec.job_id)
                    events = [e for e in store.events() if e["event"] == "guardrail"]
                    noise = m.get("noise_scale") or {}
                    rows.append({"case": name, "seed": seed, "guardrail": guard, "accuracy": m["test_accuracy"],
                                 "level": store.guard_level(), "guard_events": len(events),
                                 "rejected": m["rejected_pushes"], "val_slice": len(data.y_val),
                                 "noise_samples": noise.get("samples"), "workers_help": noise.get("workers_that_help"),
                                 "scaling_warning": bool(m.get("scaling_warning"))})
    summary = []
    for name, *_ in CASES:
        on = statistics.median(r["accuracy"] for r in rows if r["case"] == name and r["guardrail"])
        off = statistics.median(r["accuracy"] for r in rows if r["case"] == name and not r["guardrail"])
        summary.append({"case": name, "median_on": on, "median_off": off, "gap_points": 100 * (off - on),
                        "within_1_point": abs(off - on) <= 0.01})
    print(table(rows, ["case", "seed", "guardrail", "accuracy", "level", "guard_events", "rejected", "val_slice",
                       "noise_samples", "workers_help", "scaling_warning"]))
    print(table(summary, ["case", "median_on", "median_off", "gap_points", "within_1_point"]))
    print("wrote", write_json("guardrail", {"args": vars(args), "rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()
