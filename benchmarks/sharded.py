"""Weights in one Redis against weights sharded over a 3-primary Redis Cluster
(`--weights-url`), side by side in one run: pull and push time per pusher and applied
versions per second, with K pusher processes, at two model sizes.

    python -m benchmarks.sharded [--pushers 4 16] [--mb 45 180] [--seconds 8] [--tensors 12]

Each process pulls, "trains" for --train-ms (sleeps), and pushes through WeightStore.push,
as benchmarks.contention does; the model is --tensors float32 tensors (sharding splits
between tensors, never inside one). On 2 cores every Redis, the cluster's three included,
shares the CPUs with the pushers: the figures say what the code costs, not what three
machines would move (docs/deployment.md projects that). Writes benchmarks/results/sharded.json.
"""

from __future__ import annotations

import argparse

from .common import table, write_json
from .contention import run


def main() -> None:
    from bpt.broker.redis_server import PrivateCluster, PrivateRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--mb", type=float, nargs="+", default=[45, 180])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--train-ms", type=float, default=200.0)
    parser.add_argument("--tensors", type=int, default=12)
    args = parser.parse_args()
    rows = []
    with PrivateRedis() as control, PrivateCluster(3) as cluster:
        for mb in args.mb:
            for k in args.pushers:
                for backend, weights_url in (("one redis", None), ("3-shard cluster", cluster.url)):
                    row = run(control.url, k, mb, args.seconds, args.train_ms, weights_url, args.tensors)
                    row["backend"] = backend
                    rows.append(row)
                    print(row, flush=True)
    print(f"{args.seconds:g} s per cell, {args.tensors} tensors, each pusher 'trains' {args.train_ms:g} ms "
          "between pull and push")
    print(table(rows, ["backend", "pushers", "mb", "pull_ms", "push_ms", "versions_per_s", "rounds_per_push",
                       "exactly_once"]))
    print("wrote", write_json("sharded", {"rows": rows, "args": vars(args)}))


if __name__ == "__main__":
    main()
