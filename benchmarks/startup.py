"""Start-up cost: `bpt --help`, `bpt train --help`, the read-only commands (`bpt jobs`,
`bpt workers`, `bpt status`: issue 28's goal, under 0.5 s) and the embedded digits demo's
wall time against its job's own time (issue 17's goals: --help under 0.3 s, the demo under
2x its job).

    python -m benchmarks.startup [--runs 5]

Prints a table (median of --runs for the help texts; for the demo the run with the median
ratio of wall time to job time, all ratios in the JSON) and writes
benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from .common import table, write_json

BPT = [sys.executable, "-m", "bpt.cli"]


def timed(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    began = time.perf_counter()
    result = subprocess.run(BPT + args, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for command, goal in ((["--help"], 0.3), (["train", "--help"], None)):
        seconds = statistics.median(timed(command)[0] for _ in range(args.runs))
        rows.append({"what": "bpt " + " ".join(command), "seconds": seconds, "goal": goal and f"< {goal} s",
                     "met": None if goal is None else seconds < goal})
    from bpt.broker.redis_server import PrivateRedis

    with PrivateRedis() as server:  # read-only commands against a Redis holding one queued job (issue 28: < 0.5 s)
        job = timed(["train", "--redis-url", server.url, "--detach", "--epochs", "1", "--dataset", "digits"])[1]
        for command in (["jobs"], ["workers"], ["status", job.stdout.strip()]):
            seconds = statistics.median(timed(command + ["--redis-url", server.url])[0] for _ in range(args.runs))
            rows.append({"what": "bpt " + command[0], "seconds": seconds, "goal": "< 0.5 s", "met": seconds < 0.5})
    demos = []
    for _ in range(args.runs):
        wall, result = timed(["train", "--dataset", "digits", "--quiet", "--json", "--out", tempfile.mkdtemp()])
        demos.append((wall / json.loads(result.stdout.strip().splitlines()[-1])["wall_seconds"], wall,
                      json.loads(result.stdout.strip().splitlines()[-1])["wall_seconds"]))
    ratio, wall, job = sorted(demos)[len(demos) // 2]  # the run with the median ratio
    rows.append({"what": "bpt train --dataset digits (embedded)", "seconds": wall, "job_seconds": job,
                 "ratio": ratio, "goal": "< 2x the job", "met": wall < 2 * job,
                 "ratios": [round(d[0], 2) for d in demos]})
    print(table(rows, ["what", "seconds", "job_seconds", "ratio", "goal", "met"]))
    print("wrote", write_json("startup", {"rows": rows, "args": vars(args)}))


if __name__ == "__main__":
    main()
