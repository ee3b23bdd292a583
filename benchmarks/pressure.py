"""Asynchronous accuracy under pressure: digits at 2, 4 and 8 workers (oversubscribed on
small machines, which only adds staleness), plain async vs AGWU vs sync vs normalized (the
default), each asynchronous rule with the accuracy guardrail off and on, side by side with
one PyTorch process.

    python -m benchmarks.pressure [--workers 2 4 8] [--seeds 0 1] [--rules agwu normalized]

Reports the final test accuracy (median of the seeds), the worst seed, wall seconds, the
pushes rejected as too stale and how often the guardrail tightened the rule.
"""

from __future__ import annotations

import argparse
import statistics

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare

from .accuracy import plain_pytorch
from .common import local_cluster, run_bpt_job, table, write_json

CONFIGS = [("async", 0.0), ("async", 0.05), ("agwu", 0.0), ("agwu", 0.05), ("sync", 0.0), ("normalized", 0.0),
           ("normalized", 0.05)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rules", nargs="+", default=None,
                        help="Only these rules (default: all of async, agwu, sync, normalized).")
    args = parser.parse_args()
    configs = [c for c in CONFIGS if args.rules is None or c[0] in args.rules]
    rows = []
    base = []
    for seed in args.seeds:
        spec, data, _ = prepare(JobChoices(DatasetSpec("digits"), epochs=args.epochs, seed=seed))
        base.append(plain_pytorch(spec, data, seed)["test_accuracy"])
    rows.append({"workers": 1, "rule": "pytorch", "guardrail": "-", "accuracy": statistics.median(base),
                 "worst": min(base)})
    for workers in args.workers:
        with local_cluster(workers) as (settings, app, client):
            for rule, guard in configs:
                results = []
                for seed in args.seeds:
                    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=args.epochs, seed=seed,
                                                             workers=workers, rule=rule, guardrail=guard))
                    metrics = run_bpt_job(settings, app, client, spec, data, weights)
                    tightened = sum(e["event"] == "guardrail" for e in client_events(client, spec.job_id))
                    results.append({**metrics, "tightened": tightened})
                accs = [r["test_accuracy"] for r in results]
                rows.append({"workers": workers, "rule": rule, "guardrail": guard or "off",
                             "accuracy": statistics.median(accs), "worst": min(accs),
                             "wall_s": statistics.median(r["wall_seconds"] for r in results),
                             "rejected": statistics.median(r["rejected_pushes"] for r in results),
                             "tightened": sum(r["tightened"] for r in results)})
    print(f"digits, {args.epochs} epochs, seeds {args.seeds}: test accuracy (median, worst seed)")
    print(table(rows, ["workers", "rule", "guardrail", "accuracy", "worst", "wall_s", "rejected", "tightened"]))
    print("wrote", write_json("pressure", {"args": vars(args), "rows": rows}))


def client_events(client, job_id: str) -> list[dict]:
    from bpt.broker.job_store import JobStore

    return JobStore(client, job_id).events()


if __name__ == "__main__":
    main()
