"""How much the 2-worker digits jobs of the end-to-end and fault tests vary from run to run.

Two tests hold an absolute accuracy bar on a 2-worker digits job:

- tests/workers/test_end_to_end.py: the default digits job (`JOB`) reaches 96.5%;
- tests/workers/test_faults.py: the same data for 15 epochs on two workers slowed 6x
  (`KILL_JOB`), one of whose pool processes is killed with SIGKILL at version 20, reaches 96%.

Each failed in full suites, a few digits under its bar on 359 test images: the end-to-end
job at 0.9694 on RabbitMQ in three, under its former 97% (and at 0.9694 in a fourth since),
the killed job at 0.9582 once. This runs each job N times, on the tests' own cluster shape
and broker, so the bars are sized from a measured spread and not from a few runs (as
benchmarks.scale_spread did for test_scale):

    python -m benchmarks.digits_spread [--runs 12] [--jobs digits killed] [--broker amqp://...] [--cold] [--rule R] [--processes N]

`killed` runs the fault test's pair each time: an undisturbed job (`calm`), then the same job
with one training process killed; the test also bounds the kill's cost (killed within
KILL_COST of calm), summarised as `killed - calm`. Prints a row per run and a summary per
column (min, median, max, mean, standard deviation, runs below each bar), and writes
benchmarks/results/digits_spread_BROKER.json.

The jobs run one after another on one cluster that stays up, where the tests start theirs
with the module or the test; `--cold` starts a fresh cluster for every digits run, as the
end-to-end test meets its workers (it made no difference: docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import statistics
import time

from bpt.broker.job_store import FINISHED
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.train.merge import RULES

from .common import local_cluster, table, write_json

JOB = JobChoices(DatasetSpec("digits"), workers=2)  # the end-to-end test's job, its 96.5% bar
KILL_JOB = JobChoices(DatasetSpec("digits"), epochs=15, workers=2)  # the kill -9 test's, its 96% bar
KILL_SLOWDOWNS = (6.0, 6.0)  # both workers slowed, so that a task is running when the kill comes
KILL_AT_VERSION = 20
# The tests' absolute bars (the undisturbed job has none). digits was 0.97 until three full
# suites ended it at exactly 0.9694 (348 of 359, 11 wrong) on RabbitMQ, where 100 runs outside
# suites never went under 0.9721 (10 wrong): 0.965 allows 12 wrong (docs/benchmarks.md).
BARS = {"digits": 0.965, "killed": 0.96}
KILL_COST = 0.02  # the fault test's relative bar: the killed job within this of the undisturbed one


def submit_job(app, client, settings, choices: JobChoices, job_id: str):
    from bpt.workers.submit import submit

    spec, data, weights = prepare(choices, job_id=job_id)
    return spec, submit(app, client, settings, spec, data, weights)


def wait_done(store, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while store.status() not in FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {store.job_id} not finished after {timeout:g} s: {store.state()}")
        time.sleep(0.1)
    return store.state()


def wait_version(store, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while int(store.client.hget(store.keys.weights, "version") or 0) < version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {store.job_id} never reached version {version}")
        time.sleep(0.02)


def active_task(app) -> tuple[str, int]:
    """(worker name, pool process pid) of a task running right now."""
    for _ in range(50):
        for name, tasks in (app.control.inspect(timeout=0.5).active() or {}).items():
            if tasks:
                return name, tasks[0]["worker_pid"]
    raise RuntimeError("no task was ever active")


def kill_a_training_process(app, store) -> None:
    """The fault test's kill: SIGKILL the pool process running a task once the job is at
    version KILL_AT_VERSION; its worker lives on and Celery redelivers the task."""
    wait_version(store, KILL_AT_VERSION)
    _, pid = active_task(app)
    os.kill(pid, signal.SIGKILL)


def summary(name: str, accuracies: list[float]) -> dict:
    bar = BARS.get(name)
    return {"job": name, "runs": len(accuracies), "min": min(accuracies), "median": statistics.median(accuracies),
            "max": max(accuracies), "mean": statistics.fmean(accuracies),
            "stdev": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "bar": bar, "below_bar": None if bar is None else sum(a < bar for a in accuracies)}


def kill_cost(calm: list[float], killed: list[float]) -> dict:
    """The fault test's relative bar, pair by pair: killed - undisturbed, its worst, and the
    pairs where the kill cost more than KILL_COST."""
    costs = [k - c for c, k in zip(calm, killed)]
    return {"job": "killed - calm", "runs": len(costs), "min": min(costs), "median": statistics.median(costs),
            "max": max(costs), "mean": statistics.fmean(costs),
            "stdev": statistics.stdev(costs) if len(costs) > 1 else 0.0,
            "bar": -KILL_COST, "below_bar": sum(c < -KILL_COST for c in costs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--jobs", nargs="+", choices=("digits", "killed"), default=["digits", "killed"])
    parser.add_argument("--broker", default=None,
                        help="Celery's broker URL (e.g. amqp://guest:guest@127.0.0.1:5672//); default: the job's Redis")
    parser.add_argument("--cold", action="store_true",
                        help="digits: start a fresh cluster for every run (as the end-to-end test starts its "
                             "workers), not one cluster for all runs")
    parser.add_argument("--rule", choices=RULES, default=None,
                        help="digits: this merge rule instead of the job's default (how the rules end at 2 workers "
                             "beside the test's bar)")
    parser.add_argument("--processes", type=int, default=2,
                        help="digits: training processes in the cluster (the job is the same; with 1, one process "
                             "trains every subset, and ends the same each run)")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    digits = dataclasses.replace(JOB, rule=args.rule) if args.rule else JOB
    def digits_run(settings, app, client, run: int, how: str = "") -> None:
        _, store = submit_job(app, client, settings, digits, f"digits-{run}")
        state = wait_done(store)
        rows.setdefault("digits", []).append(state["test_accuracy"])
        print(f"digits run {run}{how}: {state['status']} {state['test_accuracy']:.4f}", flush=True)

    if "digits" in args.jobs and args.cold:
        for run in range(args.runs):  # a fresh cluster each time, as the end-to-end test starts one
            with local_cluster(args.processes, broker_url=args.broker) as (settings, app, client):
                digits_run(settings, app, client, run, " (cold)")
    elif "digits" in args.jobs:
        with local_cluster(args.processes, broker_url=args.broker) as (settings, app, client):
            for run in range(args.runs):
                digits_run(settings, app, client, run)
    if "killed" in args.jobs:
        with local_cluster(2, slowdowns=list(KILL_SLOWDOWNS), broker_url=args.broker,
                           visibility_timeout=600) as (settings, app, client):
            for run in range(args.runs):
                _, calm = submit_job(app, client, settings, KILL_JOB, f"calm-{run}")
                rows.setdefault("calm", []).append(wait_done(calm)["test_accuracy"])
                _, store = submit_job(app, client, settings, KILL_JOB, f"killed-{run}")
                kill_a_training_process(app, store)
                state = wait_done(store)
                rows.setdefault("killed", []).append(state["test_accuracy"])
                print(f"kill run {run}: calm {rows['calm'][-1]:.4f}, killed {state['status']} "
                      f"{state['test_accuracy']:.4f}", flush=True)
    summaries = [summary(name, accuracies) for name, accuracies in rows.items()]
    if "killed" in rows:
        summaries.append(kill_cost(rows["calm"], rows["killed"]))
    print()
    print(table(summaries, list(summaries[0])))
    broker = "amqp" if args.broker and args.broker.startswith("amqp") else "redis"
    variant = "".join(f"_{v}" for v in ("cold" if args.cold and "digits" in args.jobs else "",
                                         args.rule or "", f"{args.processes}p" if args.processes != 2 else "") if v)
    print("wrote", write_json(f"digits_spread_{broker}{variant}",
                              {"broker": broker, "cold": args.cold, "rule": args.rule or JOB.rule,
                               "processes": args.processes, "runs": rows, "summary": summaries}))


if __name__ == "__main__":
    main()
