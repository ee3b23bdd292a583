"""How much the 16-worker job of tests/workers/test_scale.py varies from run to run: the same
job (digits-aug 20,000 samples, subsets of 256, 4 epochs, the default rule) run N times on one
cluster of 16 real worker processes, so that the test's accuracy bar is sized from a measured
spread and not from one run.

    python -m benchmarks.scale_spread [--runs 40] [--warmup-epochs E]

Why it exists: the bar was 95% from one run of 96.9% (docs/scaling.md), and CI failed at
94.7% (340 of the 359 test digits). An asynchronous job's result depends on which pushes land
in which order, which no seed fixes; the test must sit below the spread, or it tests luck.

Prints one row per run and a summary (min, median, mean, standard deviation, runs below each
bar), and writes benchmarks/results/scale_spread.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices
from bpt.settings import Settings

from .common import table, write_json

K = 16
JOB = JobChoices(DatasetSpec("digits-aug", 20_000), epochs=4, subset_size=256, workers=K)
BARS = (0.95, 0.94)


def median_staleness(histogram: dict[int, int]) -> int:
    ordered = sorted(s for s, n in histogram.items() for _ in range(n))
    return ordered[len(ordered) // 2]


def run_once(app, client, settings, job: JobChoices = JOB) -> dict:
    """One job on the cluster; its test accuracy, median staleness and wall time."""
    from bpt.data.prepare import prepare
    from bpt.workers.submit import submit

    spec, data, weights = prepare(job)
    began = time.monotonic()
    store = submit(app, client, settings, spec, data, weights)
    while store.status() not in FINISHED:
        time.sleep(0.2)
    state = store.state()
    return {"status": state["status"], "test_accuracy": state.get("test_accuracy"),
            "median_staleness": median_staleness(store.staleness_histogram()),
            "versions": state.get("accepted"), "wall_seconds": time.monotonic() - began}


def summary(accuracies: list[float]) -> dict:
    return {"runs": len(accuracies), "min": min(accuracies), "median": statistics.median(accuracies),
            "mean": statistics.fmean(accuracies),
            "stdev": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            **{f"below_{bar}": sum(a < bar for a in accuracies) for bar in BARS}}


def main() -> None:
    from bpt.workers.app import make_app
    from bpt.workers.launcher import LocalWorkers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup-epochs", type=float, default=None,
                        help="The job's lr warm-up instead of its default (a recipe to compare).")
    args = parser.parse_args()
    job = JOB if args.warmup_epochs is None else dataclasses.replace(JOB, warmup_epochs=args.warmup_epochs)
    rows = []
    with PrivateRedis() as server:  # the test's cluster: its own Redis, 16 workers, poll 0.1 s
        settings = dataclasses.replace(Settings(), redis_url=server.url, workers=K, poll_seconds=0.1)
        with LocalWorkers(settings, K):
            app = make_app(settings)
            try:
                for run in range(args.runs):
                    rows.append({"run": run, **run_once(app, connect(server.url), settings, job)})
                    print(table(rows[-1:], list(rows[-1])).splitlines()[-1] if run else table(rows, list(rows[0])),
                          flush=True)
            finally:
                app.close()
    result = summary([r["test_accuracy"] for r in rows])
    print()
    print(table([result], list(result)))
    name = "scale_spread" if args.warmup_epochs is None else f"scale_spread_warmup{args.warmup_epochs:g}"
    print("wrote", write_json(name, {"job": "digits-aug 20,000, subsets 256, 4 epochs, 16 workers",
                                     "warmup_epochs": job.warmup_epochs, "runs": rows, "summary": result}))


if __name__ == "__main__":
    main()
