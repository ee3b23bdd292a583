"""The weight store under many pushers: compare-and-set rounds per push and applied versions
per second with K pusher processes (not threads) at several model sizes, on a private Redis.

    python -m benchmarks.contention [--pushers 4 16 32] [--mb 0.25 4 45] [--seconds 6]

Each process pulls, "trains" for --train-ms (sleeps: the CPU stays free for the pushers and
Redis, as on a cluster whose training runs elsewhere), and pushes a delta through
WeightStore.push with the default rule, as a worker does; rounds > 1 mean the version moved
between the merge and the compare-and-set, and the push merged and uploaded again.
Writes benchmarks/results/contention.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from .common import table, write_json


def _pusher(url: str, job_id: str, index: int, mb: float, seconds: float, train_ms: float, live: int, out,
            barrier) -> None:
    from bpt.merge import MergeRule
    from bpt.broker.connection import connect
    from bpt.broker.weight_store import WeightStore

    client = connect(url)
    store = WeightStore(client, job_id)
    size = max(1, int(mb * 2**20 / 4))
    delta = {"w": np.full(size, 1e-3, dtype=np.float32)}
    rule = MergeRule("normalized", s_max=10**9)
    rounds, pushes, n = 0, 0, 0
    barrier.wait()  # every process imported and connected: the measured window starts together
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pulled = store.pull()
        time.sleep(train_ms / 1000)
        result = store.push(rule=rule, pulled_version=pulled.version, delta=delta, accuracy=0.5, epoch=index,
                            wave=0, subset=n, base=pulled, live=live)
        n += 1
        if result.status == "accepted":
            pushes += 1
            rounds += result.cas_rounds
    out.put((pushes, rounds))


def run(url: str, pushers: int, mb: float, seconds: float, train_ms: float) -> dict:
    from bpt.broker.connection import connect
    from bpt.broker.weight_store import WeightStore

    job_id = f"bench-{pushers}-{mb}-{time.time_ns()}"
    client = connect(url)
    store = WeightStore(client, job_id)
    store.initialize({"w": np.zeros(max(1, int(mb * 2**20 / 4)), dtype=np.float32)})
    ctx = mp.get_context("spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(pushers + 1)
    procs = [ctx.Process(target=_pusher, args=(url, job_id, i, mb, seconds, train_ms, pushers, out, barrier))
             for i in range(pushers)]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)
    began = time.perf_counter()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - began
    pushes, rounds = sum(r[0] for r in results), sum(r[1] for r in results)
    version = store.version()  # pushes still in flight at the deadline finish: counted, a little past it
    for key in client.scan_iter(match=f"*{{{job_id}}}*"):
        client.delete(key)
    return {"pushers": pushers, "mb": mb, "pushes": pushes, "versions": version,
            "rounds_per_push": rounds / pushes if pushes else None,
            "versions_per_s": version / wall, "exactly_once": version == pushes, "wall_s": wall}


def main() -> None:
    from bpt.broker.redis_server import PrivateRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushers", type=int, nargs="+", default=[4, 16, 32])
    parser.add_argument("--mb", type=float, nargs="+", default=[0.25, 4, 45])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--train-ms", type=float, default=50.0)
    args = parser.parse_args()
    rows = []
    with PrivateRedis() as server:
        for mb in args.mb:
            for k in args.pushers:
                rows.append(run(server.url, k, mb, args.seconds, args.train_ms))
                print(rows[-1], flush=True)
    print(f"{args.seconds:g} s per cell, each pusher 'trains' {args.train_ms:g} ms between pull and push")
    print(table(rows, ["pushers", "mb", "pushes", "versions", "rounds_per_push", "versions_per_s", "exactly_once"]))
    print("wrote", write_json("contention", {"rows": rows, "args": vars(args)}))


if __name__ == "__main__":
    main()
