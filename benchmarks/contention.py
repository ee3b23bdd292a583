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


def model(mb: float, tensors: int, fill: float = 0.0) -> dict[str, np.ndarray]:
    """`tensors` float32 tensors of mb MiB in all (a real model has many; one cannot be sharded)."""
    size = max(1, int(mb * 2**20 / 4 / tensors))
    return {f"t{i}": np.full(size, fill, dtype=np.float32) for i in range(tensors)}


def _open(url: str, job_id: str, weights_url: str | None):
    from bpt.broker.connection import connect
    from bpt.broker.weight_shards import open_shards
    from bpt.broker.weight_store import WeightStore

    return WeightStore(connect(url), job_id, shards=open_shards(weights_url, 3, 120))


def _pusher(url: str, job_id: str, index: int, mb: float, seconds: float, train_ms: float, live: int, out,
            barrier, weights_url: str | None = None, tensors: int = 1) -> None:
    from bpt.train.merge import MergeRule

    store = _open(url, job_id, weights_url)
    delta = model(mb, tensors, 1e-3)
    rule = MergeRule("normalized", s_max=10**9)
    rounds, pushes, n, pull_s, push_s = 0, 0, 0, 0.0, 0.0
    barrier.wait()  # every process imported and connected: the measured window starts together
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        pulled = store.pull()
        pull_s += time.perf_counter() - began
        time.sleep(train_ms / 1000)
        began = time.perf_counter()
        result = store.push(rule=rule, pulled_version=pulled.version, delta=delta, accuracy=0.5, epoch=index,
                            wave=0, subset=n, base=pulled, live=live)
        push_s += time.perf_counter() - began
        n += 1
        if result.status == "accepted":
            pushes += 1
            rounds += result.cas_rounds
    out.put((pushes, rounds, pull_s / max(1, n), push_s / max(1, n)))


def run(url: str, pushers: int, mb: float, seconds: float, train_ms: float, weights_url: str | None = None,
        tensors: int = 1) -> dict:
    job_id = f"bench-{pushers}-{mb}-{time.time_ns()}"
    store = _open(url, job_id, weights_url)
    client = store.client
    store.initialize(model(mb, tensors))
    ctx = mp.get_context("spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(pushers + 1)
    procs = [ctx.Process(target=_pusher, args=(url, job_id, i, mb, seconds, train_ms, pushers, out, barrier,
                                               weights_url, tensors))
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
    if store.shards is not None:
        store.shards.delete_job(job_id)
        store.shards.close()
    return {"pushers": pushers, "mb": mb, "pushes": pushes, "versions": version,
            "pull_ms": 1000 * sum(r[2] for r in results) / len(results),
            "push_ms": 1000 * sum(r[3] for r in results) / len(results),
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
