"""How much the 16-worker job of tests/workers/test_scale.py varies from run to run.

The same job (digits-aug 20,000 samples, subsets of 256, 4 epochs, the default rule unless --rule says
otherwise) run N times on one cluster of 16 real worker processes, so that the test's
accuracy bar is sized from a measured spread and not from one run.

    python -m benchmarks.scale_spread [--runs 40] [--warmup-epochs E] [--rule RULE]

Why it exists: the bar was 95% from one run of 96.9% (docs/scaling.md), and CI failed at
94.7% (340 of the 359 test digits). An asynchronous job's result depends on which pushes land
in which order, which no seed fixes; the test must sit below the spread, or it tests luck.

Prints one row per run and a summary (min, median, mean, standard deviation, runs below each
bar), and writes benchmarks/results/scale_spread[_warmupE][_RULE].json (its accepted_pushes
column was called versions in the first draft's results: under sync a push is staged, and
a version is a round). A run past the test's deadline is cancelled and kept as a row
without an accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from bpt.broker.job_store import FINISHED
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices

from bpt.train import learning, merge

from .common import local_cluster, median_staleness, table, write_json

K = 16
JOB = JobChoices(DatasetSpec("digits-aug", 20_000), epochs=4, subset_size=256, workers=K)
BARS = (0.95, 0.94)


def run_once(app, client, settings, job: JobChoices = JOB, deadline_s: float = 400) -> dict:
    """One job on the cluster; its test accuracy, median staleness and wall time (a job that
    does not finish within the test's deadline is a row without an accuracy)."""
    from bpt.data.prepare import prepare
    from bpt.workers.submit import submit

    spec, data, weights = prepare(job)
    began = time.monotonic()
    store = submit(app, client, settings, spec, data, weights)
    while store.status() not in FINISHED:
        if time.monotonic() - began > deadline_s:  # the next runs must not share the cluster with it
            store.cancel(f"scale_spread: past the test's {deadline_s:g} s deadline")
        time.sleep(0.2)
    state = store.state()
    return {"status": state["status"], "test_accuracy": state.get("test_accuracy"),
            "median_staleness": median_staleness(store.staleness_histogram()),
            "accepted_pushes": state.get("accepted"), "wall_seconds": time.monotonic() - began,
            "val_rise": learning.rise(store.evals()), "warned": bool(state.get("warning"))}


def summary(accuracies: list[float | None]) -> dict:
    """The spread of the runs that ended with an accuracy, and how many did not."""
    ended = [a for a in accuracies if a is not None]
    return {"runs": len(accuracies), "without_accuracy": len(accuracies) - len(ended),
            "min": min(ended, default=None), "median": statistics.median(ended) if ended else None,
            "mean": statistics.fmean(ended) if ended else None,
            "stdev": statistics.stdev(ended) if len(ended) > 1 else 0.0,
            **{f"below_{bar}": sum(a < bar for a in ended) for bar in BARS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup-epochs", type=float, default=None,
                        help="The job's lr warm-up instead of its default (a recipe to compare).")
    parser.add_argument("--rule", default=None, choices=merge.RULES,
                        help="A merge rule instead of the default (e.g. sync).")
    args = parser.parse_args()
    job = JOB if args.warmup_epochs is None else dataclasses.replace(JOB, warmup_epochs=args.warmup_epochs)
    job = job if args.rule is None else dataclasses.replace(job, rule=args.rule)
    rows = []
    with local_cluster(K, poll_seconds=0.1) as (settings, app, client):  # the test's cluster and poll
        for run in range(args.runs):
            rows.append({"run": run, **run_once(app, client, settings, job)})
            print(table(rows[-1:], list(rows[-1])).splitlines()[-1] if run else table(rows, list(rows[0])),
                  flush=True)
    result = summary([r["test_accuracy"] for r in rows])
    print()
    print(table([result], list(result)))
    name = "scale_spread" + (f"_warmup{args.warmup_epochs:g}" if args.warmup_epochs is not None else "") + (
        f"_{args.rule}" if args.rule else "")
    print("wrote", write_json(name, {"job": "digits-aug 20,000, subsets 256, 4 epochs, 16 workers",
                                     "warmup_epochs": job.warmup_epochs, "rule": job.rule, "runs": rows,
                                     "summary": result}))


if __name__ == "__main__":
    main()
