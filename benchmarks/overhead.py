"""Overhead per task: the share of a subset task's wall time spent outside forward/backward
(pull, validation score, merge, push), and of the whole job's (that plus queueing and idle
workers), for subset sizes 256 to 8192, side by side in one run.

    python -m benchmarks.overhead [--samples 32768] [--sizes 256 512 1024 2048 4096 8192]

digits-aug at 28x28 with LeNet-5, 2 workers, 1 epoch, AGWU. The default subset size
(bpt.data.prepare.default_subset_size) is picked from this table.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import FINISHED
from bpt.workers.submit import submit

from .common import local_cluster, table, write_json


def run(settings, app, client, samples: int, subset: int, epochs: int, workers: int) -> dict:
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits-aug", samples=samples), model="lenet5",
                                             epochs=epochs, subset_size=subset, workers=workers))
    store = submit(app, client, settings, spec, data, weights)
    while store.status() not in FINISHED:
        time.sleep(0.02)
    state = store.state()
    pushes = [e for e in store.events() if e["event"].startswith("push-") and "task_s" in e]
    compute = sum(e["compute_s"] for e in pushes)
    wall = state["finished"] - state["started"]
    return {"subset": subset, "tasks": len(pushes),
            "task_overhead": statistics.median(1 - e["compute_s"] / e["task_s"] for e in pushes),
            "job_overhead": 1 - compute / (workers * wall),
            "samples_per_s": epochs * spec.n_train / wall, "wall_s": wall,
            "test_accuracy": state["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with local_cluster(args.workers) as (settings, app, client):
        run(settings, app, client, 4096, 512, 1, args.workers)  # warm up the workers (imports, first job)
        rows = [run(settings, app, client, args.samples, size, args.epochs, args.workers) for size in args.sizes]
    print(f"digits-aug {args.samples} samples, lenet5, {args.epochs} epoch(s), {args.workers} workers, agwu")
    print(table(rows, list(rows[0])))
    print("wrote", write_json("overhead", {"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
