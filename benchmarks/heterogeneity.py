"""Heterogeneity on one machine: IDPA (+ the scheduler task) against the greedy shared queue,
on uneven workers, side by side in one run, against one yardstick for both.

    python -m benchmarks.heterogeneity [--samples 30000] [--epochs 2] [--runs 3] [--scenarios slow3 lognormal]

Scenarios: `slow3`, 3 workers, one at --slowdown 3; `lognormal`, 4 workers whose slowdowns
are drawn lognormal (sigma 0.5, seeded, scaled so the fastest is 1); `equal16`, 16 equal
workers (not run by default: `--scenarios equal16`). Each scenario first
runs a calibration job (a static equal split, one epoch) and takes each worker's throughput
while busy from it: the bound N x epochs / sum(r_i) comes from that run and is the same for
every policy (issue 16: a bound measured inside each policy's own run favoured the policy
with more per-task overhead). Then each policy runs --runs times; the table gives the
median epoch wall time, its ratio to the bound, accuracy, tasks, and the mean staleness of
the slowest worker's pushes beside the others' (IDPA sizes tasks by speed, so a slow
worker's delta should not be staler than a fast one's).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare

from .common import local_cluster, run_bpt_job, table, write_json
from .simulation import decision_time

POLICIES = ("greedy", "idpa")


def scenario_slowdowns(name: str, seed: int = 0) -> list[float]:
    if name == "slow3":
        return [1.0, 1.0, 3.0]
    if name == "equal16":  # 16 equal workers (oversubscribed here: the staleness a 16-node cluster sees)
        return [1.0] * 16
    if name == "lognormal":
        rng = random.Random(seed)
        draws = [math.exp(rng.gauss(0, 0.5)) for _ in range(4)]
        return [round(d / min(draws), 2) for d in draws]
    raise ValueError(f"unknown scenario {name!r}")


def staleness_by_worker(client, job_id: str) -> dict[str, float]:
    from bpt.broker.job_store import JobStore

    seen: dict[str, list[int]] = {}
    for e in JobStore(client, job_id).events():
        if e["event"] == "push-accepted":
            seen.setdefault(e["worker"], []).append(e["staleness"])
    return {w: statistics.mean(s) for w, s in seen.items()}


def run_scenario(name: str, args) -> list[dict]:
    slowdowns = scenario_slowdowns(name, args.seed)
    rows = []
    with local_cluster(len(slowdowns), slowdowns=slowdowns) as (settings, app, client):
        def job(partition: str, epochs: int, seed: int):
            choices = JobChoices(DatasetSpec("digits-aug", samples=args.samples), epochs=epochs,
                                 workers=len(slowdowns), partition=partition, seed=seed)
            spec, data, weights = prepare(choices)
            return spec, run_bpt_job(settings, app, client, spec, data, weights)

        spec, calibration = job("static", 1, 0)
        rates = {w: s["samples_per_second"] for w, s in calibration["workers"].items()}
        slowest = min(rates, key=rates.get)
        bound = spec.n_train / sum(rates.values())  # seconds an epoch
        print(f"{name}: slowdowns {slowdowns}; calibrated samples/s {', '.join(f'{r:.0f}' for r in rates.values())}; "
              f"bound {bound:.2f} s an epoch", flush=True)
        for partition in POLICIES:
            runs = []
            for run in range(args.runs):
                spec, m = job(partition, args.epochs, run)
                by_worker = staleness_by_worker(client, spec.job_id)
                others = [s for w, s in by_worker.items() if w != slowest]
                runs.append({"epoch_s": m["wall_seconds"] / args.epochs, "accuracy": m["test_accuracy"],
                             "tasks": m["accepted_pushes"] + m["rejected_pushes"],
                             "slow_staleness": by_worker.get(slowest), "other_staleness": statistics.mean(others) if others else None})
                print(f"  {partition} run {run}: {runs[-1]['epoch_s']:.2f} s an epoch, accuracy {m['test_accuracy']:.4f}",
                      flush=True)
            epoch = statistics.median(r["epoch_s"] for r in runs)
            rows.append({"scenario": name, "partition": partition, "epoch_s": epoch, "bound_s": bound,
                         "ratio": epoch / bound, "epochs_s_all": "/".join(f"{r['epoch_s']:.2f}" for r in runs),
                         "accuracy": statistics.median(r["accuracy"] for r in runs),
                         "worst_accuracy": min(r["accuracy"] for r in runs),
                         "tasks": statistics.median(r["tasks"] for r in runs),
                         "slow_staleness": statistics.median(r["slow_staleness"] or 0 for r in runs),
                         "other_staleness": statistics.median(r["other_staleness"] or 0 for r in runs),
                         "slowdowns": "/".join(f"{s:g}" for s in slowdowns)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the lognormal slowdowns")
    parser.add_argument("--scenarios", nargs="+", default=["slow3", "lognormal"])
    args = parser.parse_args()
    rows = [row for name in args.scenarios for row in run_scenario(name, args)]
    print(f"digits-aug {args.samples} samples, lenet5, {args.epochs} epochs; median of {args.runs} runs; "
          "bound from a calibration run shared by both policies")
    print(table(rows, ["scenario", "slowdowns", "partition", "epoch_s", "epochs_s_all", "bound_s", "ratio", "accuracy",
                       "worst_accuracy", "tasks", "slow_staleness", "other_staleness"]))
    verdicts = {}
    for name in args.scenarios:
        by = {r["partition"]: r for r in rows if r["scenario"] == name}
        gain = 1 - by["idpa"]["epoch_s"] / by["greedy"]["epoch_s"]
        verdicts[name] = {"idpa_faster_by": gain, "goal_met": gain >= 0.10
                          and by["idpa"]["accuracy"] >= by["greedy"]["accuracy"] - 0.005}
        print(f"{name}: IDPA's epoch {gain:+.1%} vs greedy's (goal: at least 10% faster, accuracy no worse): "
              f"{'met' if verdicts[name]['goal_met'] else 'NOT met'}")
    seconds = decision_time()
    print(f"scheduler decision time, 1000 nodes and 10,000 pending subsets: {seconds * 1000:.1f} ms (goal < 50 ms)")
    print("wrote", write_json("heterogeneity", {"rows": rows, "verdicts": verdicts, "decision_seconds": seconds,
                                                "args": vars(args)}))


if __name__ == "__main__":
    main()
