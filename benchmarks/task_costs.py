"""The costs the time-to-accuracy clock charges, measured on real workers here:

- per task, on 2 real workers training LeNet-5 (digits-aug 28x28, subsets of 256): a
  training process's samples/s (compute only), and everything a task spends outside its
  compute (setup and pull, the score on the validation slice, the push, bookkeeping), plus
  the broker's dispatch: the gap between a worker's task ending and its next one starting;
- the store's merge time: applied versions per second of the real weight store with 4, 16
  and 64 pusher processes pushing a LeNet-5-sized (0.24 MB) delta as fast as they can
  (benchmarks.contention with no training time): one merge at a time under the lease, so
  1 / versions per second is what one merge occupies the store. On 2 cores the pushers and
  Redis share the CPUs, so this is pessimistic for a cluster whose pushers run elsewhere.

    python -m benchmarks.task_costs      # writes benchmarks/task_costs.json (read by time_to_accuracy)
"""

from __future__ import annotations

import json
import os
import statistics

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import JobStore
from bpt.broker.redis_server import PrivateRedis

from . import contention
from .common import local_cluster, machine, run_bpt_job
from .time_to_accuracy import COSTS

LENET_MB = 61_706 * 4 / 2**20


def task_costs() -> dict:
    with local_cluster(2) as (settings, app, client):
        spec, data, weights = prepare(JobChoices(DatasetSpec("digits-aug", samples=6000), model="lenet5", epochs=3,
                                                 subset_size=256, workers=2, seed=0))
        run_bpt_job(settings, app, client, spec, data, weights)
        pushes = [e for e in JobStore(client, spec.job_id).events() if e["event"].startswith("push-")]
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
            "dispatch_seconds": statistics.median(gaps) if gaps else 0.0, "tasks": len(pushes)}


def main() -> None:
    costs = task_costs()
    costs["task_seconds"] = costs["outside_compute_seconds"] + costs["dispatch_seconds"]
    merges = {}
    with PrivateRedis() as server:
        for k in (4, 16, 64):
            row = contention.run(server.url, k, LENET_MB, seconds=6.0, train_ms=0.0)
            merges[str(k)] = 1.0 / row["versions_per_s"]
            print(f"{k} pushers: {row['versions_per_s']:.0f} versions/s, exactly once {row['exactly_once']}", flush=True)
    costs["merge_seconds"] = merges
    costs["measured"] = machine()
    with open(COSTS, "w") as f:
        json.dump(costs, f, indent=2)
    print(json.dumps(costs, indent=2))
    print("wrote", os.path.relpath(COSTS))


if __name__ == "__main__":
    main()
