"""IDPA against a static split and a greedy work queue, simulated at 10, 100 and 1000 nodes
(lognormal throughputs, with and without 2% failures), and the time one IDPA round takes
for 1000 nodes and 10,000 pending subsets.

    python -m benchmarks.simulation

Every policy is built by idpa.build_policy, as the scheduler task builds it for a job of that
size (issue 16): at the subset size bpt train picks (2048 for these epochs) and at 512.
Goals (issues 4, 16): IDPA within 5% of the ideal bound and below greedy at 10, 100 and 1000
nodes with 2% failures; a scheduling round under 50 ms.
"""

from __future__ import annotations

import statistics
import time

from bpt.plan.idpa import IDPA, NodeView, Ranges
from bpt.plan.simulator import SimConfig, simulate

from .common import table, write_json


def decision_time(nodes: int = 1000, pending: int = 10_000, rounds: int = 20) -> float:
    """Median seconds of one IDPA round: every node asks for work, 10,000 ranges are pending."""
    times = []
    for r in range(rounds):
        ranges = Ranges(pending * 100)
        ranges.cursor = ranges.n  # everything pending sits in given-back ranges
        for i in range(pending):
            ranges.give_back(i * 100, i * 100 + 100)
        policy = IDPA()
        policy.probe_size = 100
        views = [NodeView(f"n{i}", 500.0 + i, 0) for i in range(nodes)]
        began = time.perf_counter()
        policy.assign(ranges, views)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    """Every policy is built as a real job of that size builds it (idpa.build_policy): at the
    subset size bpt train picks for the epoch (2048 here), and at 512 (--subset-size 512)."""
    rows = []
    for subset in (None, 512):
        for nodes in (10, 100, 1000):
            for failures in (0.0, 0.02):
                cfg = SimConfig(nodes=nodes, failures=failures, seed=1, chunk=subset)
                results = {p: simulate(cfg, p) for p in ("static", "greedy", "idpa")}
                rows.append({"subset": cfg.subset_size, "nodes": nodes, "failures": f"{failures:.0%}",
                             "failed": round(failures * nodes), "ideal_s": results["idpa"].ideal,
                             **{f"{p}/ideal": r.ratio for p, r in results.items()},
                             "idpa_tasks": results["idpa"].tasks, "greedy_tasks": results["greedy"].tasks})
                print(f"done subset {cfg.subset_size}, {nodes} nodes, failures {failures:.0%}", flush=True)
    print(table(rows, ["subset", "nodes", "failures", "failed", "ideal_s", "static/ideal", "greedy/ideal", "idpa/ideal",
                       "idpa_tasks", "greedy_tasks"]))
    seconds = decision_time()
    print(f"IDPA round for 1000 nodes and 10,000 pending subsets: {seconds * 1000:.1f} ms (goal < 50 ms)")
    shipped = [r for r in rows if r["subset"] == 2048 and r["failures"] == "2%"]
    goal = all(r["idpa/ideal"] <= 1.05 and r["idpa/ideal"] < r["greedy/ideal"] for r in shipped)
    print(f"goal (default subset size, 2% failures, 10/100/1000 nodes: IDPA within 5% of the bound and below greedy): "
          f"{'met' if goal else 'NOT met'}")
    print("wrote", write_json("simulation", {"rows": rows, "decision_seconds": seconds, "goal_met": goal}))


if __name__ == "__main__":
    main()
