"""Weight store against raw Redis: one pull plus one push through bpt's store, as long as a
worker waits for them, against a plain SET and GET of the same bytes with redis-py, on the
same private Redis server, side by side.

    python -m benchmarks.weight_store [--sizes 0.25 4 45] [--repeats 50]

Goal (issue 8): bpt / raw <= 1.15 at every size. A second baseline, `floor`, sends the SET
without redis-py's copies (bpt.broker.bulk.set_buffer, what bpt's push uses) and then GETs:
the least any client written in Python here can spend on the same bytes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bpt.train.merge import MergeRule
from bpt.broker import bulk, codec
from bpt.broker.connection import connect
from bpt.broker.redis_server import PrivateRedis
from bpt.broker.weight_store import WeightStore

from .common import table, write_json

GOAL = 1.15
BLOCK = 5  # repeats of each side in turn
RULE = MergeRule("agwu", alpha=0.5, gamma=0.5, s_max=10**9)


def model_of(megabytes: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 tensors totalling about `megabytes`, shaped like a CNN's (one big, a few small)."""
    total = int(megabytes * 2**20 / 4)
    rng = np.random.default_rng(seed)
    sizes = {"conv1.weight": total // 50, "conv2.weight": total // 5, "fc1.bias": 256, "fc2.weight": total // 20}
    sizes["fc1.weight"] = total - sum(sizes.values())
    return {name: rng.standard_normal(n, dtype=np.float32) for name, n in sizes.items()}


def time_raw(client, blob: bytes, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        client.set("bench:raw", blob)
        client.get("bench:raw")
        times.append(time.perf_counter() - began)
    return times


def time_floor(client, blob: bytes, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        bulk.set_buffer(client, "bench:floor", blob, px=60_000)
        client.get("bench:floor")
        times.append(time.perf_counter() - began)
    return times


def time_bpt(store: WeightStore, delta: dict, repeats: int, first: int) -> tuple[list[float], list[float], list[float]]:
    """A worker's view: pull the newest weights, then push a delta computed against them
    (subset ids from `first` on: each push is a new one)."""
    pulls, pushes, both = [], [], []
    for i in range(first, first + repeats):
        began = time.perf_counter()
        pulled = store.pull()
        middle = time.perf_counter()
        result = store.push(rule=RULE, pulled_version=pulled.version, delta=delta, accuracy=0.9, epoch=0, wave=0,
                            subset=i, base=pulled)
        ended = time.perf_counter()
        assert result.status == "accepted", result
        pulls.append(middle - began)
        pushes.append(ended - middle)
        both.append(ended - began)
    return pulls, pushes, both


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 4, 45], help="model sizes in MB")
    parser.add_argument("--repeats", type=int, default=50, help="per side, in blocks of 5")
    args = parser.parse_args()
    rows = []
    with PrivateRedis() as server:
        client = connect(server.url)
        for size in args.sizes:
            weights = model_of(size)
            blob = codec.encode_weights(weights)
            store = WeightStore(client, f"bench-{size}")
            store.initialize(weights)
            delta = {k: np.full_like(v, 1e-3) for k, v in weights.items()}
            time_raw(client, blob, 3)  # warm the connection and the allocator
            raws, floors, pulls, pushes, both = [], [], [], [], []
            for first in range(0, args.repeats, BLOCK):  # interleaved: this VM's speed drifts within a run
                raws += time_raw(client, blob, BLOCK)
                floors += time_floor(client, blob, BLOCK)
                for into, times in zip((pulls, pushes, both), time_bpt(store, delta, BLOCK, first)):
                    into += times
            raw, floor, bpt = statistics.median(raws), statistics.median(floors), statistics.median(both)
            rows.append({"model_mb": size, "raw_set_get_ms": 1e3 * raw, "bpt_pull_ms": 1e3 * statistics.median(pulls),
                         "bpt_push_ms": 1e3 * statistics.median(pushes), "bpt_pull_push_ms": 1e3 * bpt,
                         "floor_ms": 1e3 * floor, "ratio": bpt / raw, "ratio_to_floor": bpt / floor,
                         "goal_met": bpt / raw <= GOAL})
            client.delete("bench:raw")
    print(f"weight store vs raw Redis SET+GET (median of {args.repeats}; goal ratio <= {GOAL})")
    print(table(rows, list(rows[0])))
    print("wrote", write_json("weight_store", {"goal": GOAL, "repeats": args.repeats, "rows": rows}))


if __name__ == "__main__":
    main()
