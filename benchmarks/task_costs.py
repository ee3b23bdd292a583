"""The costs the time-to-accuracy clock charges, measured on real workers here:

- per task, on 2 real workers training LeNet-5 (digits-aug 28x28, subsets of 256): a
  training process's samples/s (compute only), and everything a task spends outside its
  compute (setup and pull, the score on the validation slice, the push, bookkeeping), plus
  the broker's dispatch: the gap between a worker's task ending and its next one starting;
- the store's merge time: applied versions per second of the real weight store with 4, 16
  and 64 pusher processes pushing a LeNet-5-sized (0.24 MB) delta as fast as they can
  (benchmarks.contention with no training time): one merge at a time under the lease, so
  1 / versions per second is what one merge occupies the store. On 2 cores the pushers and
  Redis share the CPUs, so this is pessimistic for a cluster whose pushers run elsewhere;
- the store's commit of a sync round of 4, 16 and 64 staged LeNet-5-sized deltas (one
  process, the median of 8 rounds): what the sync rule's store does where local SGD has an
  all-reduce.

    python -m benchmarks.task_costs      # writes benchmarks/task_costs.json (read by time_to_accuracy)
    python -m benchmarks.task_costs --commit-only   # measures and updates the commit times only
    python -m benchmarks.task_costs --tasks-only     # measures and prints a task's costs; writes nothing
    python -m benchmarks.task_costs --rounds-only    # a real sync round's period and its parts; writes nothing
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.job import resume
from bpt.broker.job_store import JobStore
from bpt.broker.redis_server import PrivateRedis

from . import contention
from .common import local_cluster, machine, run_bpt_job
from .time_to_accuracy import COSTS

LENET_MB = 61_706 * 4 / 2**20
LENET_TENSORS = 10  # LeNet-5's weights and biases


def _job(workers: int, **choices) -> JobChoices:
    """The job whose tasks and rounds are measured: digits-aug 28x28, LeNet-5, subsets of 256."""
    return JobChoices(DatasetSpec("digits-aug", samples=6000), model="lenet5", epochs=3, subset_size=256,
                      workers=workers, seed=0, **choices)


def task_costs() -> dict:
    with local_cluster(2) as (settings, app, client):
        spec, data, weights = prepare(_job(2))
        run_bpt_job(settings, app, client, spec, data, weights)
        pushes = [e for e in JobStore(client, spec.job_id).events()  # the tasks that trained and pushed
                  if e["event"].startswith("push-") and "compute_s" in e]
    by_worker: dict[str, list[dict]] = {}
    for e in pushes:
        by_worker.setdefault(e["worker"], []).append(e)
    gaps = []  # end of one task to the end of the next, less the next one's own time: dispatch and queueing
    for events in by_worker.values():
        for before, after in zip(events, events[1:]):
            gaps.append(max(0.0, after["time"] - before["time"] - after["task_s"]))
    size = spec.subset_size
    return {"samples_per_second": statistics.median(size / e["compute_s"] for e in pushes),
            "outside_compute_seconds": statistics.median(e["task_s"] - e["compute_s"] for e in pushes),
            "score_seconds": statistics.median(e["score_s"] for e in pushes),
            # where the rest goes: setup (registry, rows, pull), the push (lease, merge, install)
            # and the rest (the lr, the delta's subtraction, then statistics, rates, the event)
            "setup_seconds": statistics.median(e["setup_s"] for e in pushes),
            "push_seconds": statistics.median(e["push_s"] for e in pushes),
            "bookkeeping_seconds": statistics.median(e["task_s"] - e["compute_s"] - e["score_s"] - e["setup_s"]
                                                     - e["push_s"] for e in pushes),
            "dispatch_seconds": statistics.median(gaps) if gaps else 0.0, "tasks": len(pushes)}


def round_costs(workers: int = 2) -> dict:
    """A real sync job's rounds against what the time-to-accuracy clock charges for one: the
    job of task_costs with `--rule sync`. Per round (medians over the rounds of a full K
    pieces, an epoch's first left out: it waits on the epoch's release): the period between
    two commits, the round's longest task (pull to push), the gap between that task's end
    and the commit after it (the commit, the next round's release and dispatch), the spread
    of the round's tasks (what the barrier waits for the slower), and their mean compute."""
    with local_cluster(workers) as (settings, app, client):
        spec, data, weights = prepare(_job(workers, rule="sync"))
        spec = dataclasses.replace(spec, eval_every=spec.total_waves + 1)  # no evaluation inside the rounds
        run_bpt_job(settings, app, client, spec, data, weights)
        events = JobStore(client, spec.job_id).events()
    committed = {(e["epoch"], e["wave"]): e["time"] for e in events if e["event"] == "round-merged"}
    shape = [spec.waves(epoch) for epoch in range(spec.epochs)]
    pieces: dict[tuple[int, int], list[dict]] = {}
    for e in events:
        if e["event"] == "push-accepted":
            pieces.setdefault((e["epoch"], resume.wave_of(shape, e["epoch"], e["piece"])), []).append(e)
    order = sorted(committed)
    rows = []
    for before, this in zip(order, order[1:]):
        tasks = pieces.get(this, [])
        if before[0] != this[0] or len(tasks) != workers:
            continue
        period, longest = committed[this] - committed[before], max(e["task_s"] for e in tasks)
        rows.append({"period": period, "longest_task": longest, "gap": period - longest,
                     "spread": longest - min(e["task_s"] for e in tasks),
                     "compute": statistics.fmean(e["compute_s"] for e in tasks)})
    return {"workers": workers, "rounds": len(rows),
            **{f"{key}_seconds": statistics.median(r[key] for r in rows) for key in rows[0]}}


def commit_seconds(url: str, counts=(4, 16, 64), rounds: int = 8) -> dict[str, float]:
    """Median seconds of WeightStore.commit_round over `rounds` rounds of k staged deltas."""
    from bpt.broker.connection import connect
    from bpt.broker.weight_store import WeightStore
    from bpt.train.merge import MergeRule

    client, out = connect(url), {}
    for k in counts:
        times = []
        for r in range(rounds):
            job = f"commit-{k}-{r}-{time.time_ns()}"
            store = WeightStore(client, job)
            store.initialize(contention.model(LENET_MB, LENET_TENSORS))
            JobStore(client, job).set_fields(status="running")
            delta = contention.model(LENET_MB, LENET_TENSORS, 1e-3)
            for subset in range(k):
                store.stage(delta=delta, samples=256, accuracy=0.5, epoch=0, wave=0, subset=subset)
            began = time.perf_counter()
            result = store.commit_round(rule=MergeRule("sync"), epoch=0, wave=0)
            times.append(time.perf_counter() - began)
            assert result.status == "accepted", result
            for key in client.scan_iter(match=f"*{{{job}}}*"):
                client.delete(key)
        out[str(k)] = statistics.median(times)
        print(f"commit of {k} staged deltas: {1000 * out[str(k)]:.2f} ms", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--commit-only", action="store_true", help="Measure the sync commit only; keep the rest.")
    only.add_argument("--tasks-only", action="store_true",
                      help="Measure and print a task's costs, split into their parts; write nothing.")
    only.add_argument("--rounds-only", action="store_true",
                      help="Measure and print a real sync round's period and where it goes (2 workers); write nothing.")
    args = parser.parse_args()
    if args.tasks_only:
        print(json.dumps(task_costs(), indent=2))
        return
    if args.rounds_only:
        print(json.dumps(round_costs(), indent=2))
        return
    if args.commit_only:
        with open(COSTS) as f:
            costs = json.load(f)
        with PrivateRedis() as server:
            costs["commit_seconds"] = commit_seconds(server.url)
        costs["commit_measured"] = machine()
        _write(costs)
        return
    costs = task_costs()
    costs["task_seconds"] = costs["outside_compute_seconds"] + costs["dispatch_seconds"]
    merges = {}
    with PrivateRedis() as server:
        for k in (4, 16, 64):
            row = contention.run(server.url, k, LENET_MB, seconds=6.0, train_ms=0.0)
            merges[str(k)] = 1.0 / row["versions_per_s"]
            print(f"{k} pushers: {row['versions_per_s']:.0f} versions/s, exactly once {row['exactly_once']}", flush=True)
    costs["merge_seconds"] = merges
    with PrivateRedis() as server:
        costs["commit_seconds"] = commit_seconds(server.url)
    costs["measured"] = machine()
    print(json.dumps(costs, indent=2))
    _write(costs)


def _write(costs: dict) -> None:
    with open(COSTS, "w") as f:
        json.dump(costs, f, indent=2)
    print("wrote", os.path.relpath(COSTS))


if __name__ == "__main__":
    main()
