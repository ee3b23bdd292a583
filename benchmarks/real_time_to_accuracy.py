"""Time to accuracy on this machine, real processes, side by side in one run (issue 25's real
acceptance): Fashion-MNIST, LeNet-5, target 87% test accuracy, in wall seconds of training.

    python -m benchmarks.real_time_to_accuracy [--seeds 0 1 2] [--epochs 3]

Systems, each at its rate from benchmarks.time_to_accuracy's tuning (docs/scaling.md):
- one process: the best single process, 2 threads (this machine's 2 cores), lr 0.01;
- DDP, gloo, 2 processes x 1 thread: batch 32 a rank, lr 0.01 x 2 (linear scaling) after a
  linear warm-up over the first 30,000 samples, as torchrun would run it;
- bpt, 2 workers: the default rule and lr scaling (x sqrt(K)), base lr 0.02, the same warm-up;
- bpt sync, 2 workers: `--rule sync --lr-scaling none` at local SGD's rate (0.05), the same
  warm-up: rounds of one subset a worker, committed by the store (the emulator's `bpt sync`);
- slow cluster: DDP on 3 ranks and bpt on 3 workers, the third 3x slower (it sleeps twice its
  measured compute: bpt's `--slowdown 3`); DDP's figure to beat is the better of all 3 ranks
  and of the 2 fast ones alone (DDP's own best answer to a straggler: leave it out).

Clocks: the baselines count only their training (evaluations are off the clock); bpt counts
from the job's start to the push that made each scored version, so its tasks' overhead
(dispatch, pull, score, push) is on its clock; its versions are snapshotted by the client and
scored after the job. The 3-process runs share 2 cores, as both systems do. Seconds to the
target are interpolated between evaluations (benchmarks.throughput.curve_summary).

Prints a table of medians and writes benchmarks/results/real_time_to_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from bpt.broker.processes import free_port
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.model import registry as models
from bpt.train import inner, training

from .common import local_cluster, table, write_json
from .throughput import bpt_curve, curve_summary
from .time_to_accuracy import DATA

TARGET = 0.87
WARMUP = 30_000  # samples, every system but the single process (benchmarks.time_to_accuracy)
LR = {"one process": 0.01, "ddp": 0.01, "bpt": 0.02, "bpt sync": 0.05}  # tuned in the emulator (docs/scaling.md)
CHUNK = 1024  # samples a round trains between lr updates (32 steps at batch 32)
EVAL_EVERY = 6144  # samples between evaluations (off the clock)


def job(data_path: str, seed: int, epochs: int, workers: int = 1, n_train: int = 0, sync: bool = False
        ) -> JobChoices:
    """bpt's job (and the baselines' data: the same split); n_train, the training split's size,
    puts its warm-up at WARMUP samples (0: no warm-up); sync: the sync rule, unscaled lr."""
    rule = dict(rule="sync", lr=LR["bpt sync"], lr_scaling="none") if sync else dict(lr=LR["bpt"])
    return JobChoices(DatasetSpec(data_path, seed=0), model="lenet5", epochs=epochs, subset_size=256,
                      lr_schedule="constant", warmup_epochs=WARMUP / n_train if n_train else 0.0, seed=seed,
                      workers=workers, **rule)


def baseline(data_path: str, seed: int, epochs: int, world: int, rank: int, threads: int, slowdown: float,
             lr: float, warmup: int) -> dict:
    """One process (world 1) or one DDP rank: batch 32, lr x world after `warmup` samples of a
    linear warm-up, every rank on its share of each CHUNK; a rank with slowdown F sleeps
    (F - 1) x its compute after each chunk, which holds the others at the next all-reduce."""
    torch.set_num_threads(threads)
    spec, data, _ = prepare(job(data_path, seed, epochs))
    net = models.build_for(spec, seed=seed)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    stepper = inner.TorchStepper(model, training.make_optimizer(model, spec.train), threads)
    n, clock, seen, curve, next_eval = len(data.x_train), 0.0, 0, [], EVAL_EVERY
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).numpy()
        for start in range(0, n - n % (world * spec.train.batch_size), CHUNK):
            idx = perm[start:start + CHUNK]
            idx = idx[:len(idx) - len(idx) % world]  # ranks must run as many steps
            stepper.set_lr(lr * world * (min(1.0, max(0.01, seen / warmup)) if warmup else 1.0))
            began = time.perf_counter()
            training.train_pass(stepper, data.x_train[idx[rank::world]], data.y_train[idx[rank::world]],
                                spec.train.batch_size, seed=seed + epoch * 7919 + start)
            compute = time.perf_counter() - began
            if slowdown > 1:
                time.sleep((slowdown - 1) * compute)
            if world > 1:
                torch.distributed.barrier()  # the chunk ends when the slowest rank's does
            clock += time.perf_counter() - began
            seen += len(idx)
            if seen >= next_eval or start + CHUNK >= n:
                next_eval += EVAL_EVERY
                if rank == 0:
                    curve.append((clock, training.evaluate(net, data.x_test, data.y_test)[1]))
                if world > 1:
                    torch.distributed.barrier()  # evaluations are off everyone's clock
    return {"curve": curve, "final_accuracy": curve[-1][1] if curve else None, "samples": seen}


def ddp(data_path: str, seed: int, epochs: int, world: int, slowdowns: list[float]) -> dict:
    """DDP on `world` single-thread ranks over gloo on loopback, as subprocesses (JSON out)."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.real_time_to_accuracy", "--rank", str(r),
                               "--world", str(world), "--slowdown", str(slowdowns[r]), "--data", data_path,
                               "--seed", str(seed), "--epochs", str(epochs)], stdout=subprocess.PIPE, text=True,
                              env=env) for r in range(world)]
    outs = [p.communicate(timeout=3600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a DDP rank failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def rank_main(args) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=args.rank, world_size=args.world)
    try:
        result = baseline(args.data, args.seed, args.epochs, args.world, args.rank, 1, args.slowdown, LR["ddp"],
                          WARMUP)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    print(json.dumps(result))


def summary(name: str, runs: list[dict]) -> dict:
    reached = [curve_summary(r["curve"], TARGET) for r in runs]
    return {"system": name, "s_to_87": statistics.median(t if t is not None else float("inf") for t in reached),
            "per_seed": [round(t, 1) if t is not None else None for t in reached],
            "reached": f"{sum(t is not None for t in reached)}/{len(reached)}",
            "final_acc": statistics.median(r["final_accuracy"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BPT_FASHION_MNIST", DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-slow", action="store_true", help="Only the 2-process systems.")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--slowdown", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args)
        return
    if not os.path.isfile(args.data):
        sys.exit(f"skipped: {args.data} not found (the shared Fashion-MNIST file; or pass --data)")
    runs: dict[str, list[dict]] = {}

    def add(name: str, result: dict) -> None:
        runs.setdefault(name, []).append(result)
        t = curve_summary(result["curve"], TARGET)
        print(f"{name} seed {len(runs[name]) - 1}: {'never' if t is None else f'{t:.1f} s'} to {TARGET:.0%}, "
              f"final {result['final_accuracy']:.4f}", file=sys.stderr, flush=True)

    for seed in args.seeds:
        add("one process, 2 threads", baseline(args.data, seed, args.epochs, 1, 0, 2, 1.0, LR["one process"], 0))
        add("ddp gloo 2x1", ddp(args.data, seed, args.epochs, 2, [1.0, 1.0]))
        if not args.skip_slow:
            add("ddp gloo 3x1, one 3x slower", ddp(args.data, seed, args.epochs, 3, [1.0, 1.0, 3.0]))
            three, two = runs["ddp gloo 3x1, one 3x slower"][-1], runs["ddp gloo 2x1"][-1]  # two: the fast ranks alone
            add("ddp, the better of those two", min((three, two), key=lambda r: curve_summary(r["curve"], TARGET)
                                                    or float("inf")))
    n_train = prepare(job(args.data, 0, 1))[0].n_train
    with local_cluster(2) as cluster:
        for seed in args.seeds:
            add("bpt 2 workers", bpt_curve(cluster, job(args.data, seed, args.epochs, 2, n_train), evals=30))
        for seed in args.seeds:
            add("bpt sync, 2 workers", bpt_curve(cluster, job(args.data, seed, args.epochs, 2, n_train, sync=True),
                                                 evals=30))
    if not args.skip_slow:
        with local_cluster(3, slowdowns=[1.0, 1.0, 3.0]) as cluster:
            for seed in args.seeds:
                add("bpt 3 workers, one 3x slower",
                    bpt_curve(cluster, job(args.data, seed, args.epochs, 3, n_train), evals=30))
    rows = [summary(name, results) for name, results in runs.items()]
    one = rows[0]["s_to_87"]
    for r in rows:
        r["speed_up"] = one / r["s_to_87"] if r["s_to_87"] not in (0, float("inf")) else 0.0
    print(f"Fashion-MNIST, LeNet-5, {TARGET:.0%} test accuracy; median of seeds {args.seeds}; wall seconds of "
          "training, interpolated between evaluations")
    print(table(rows, ["system", "s_to_87", "speed_up", "reached", "final_acc", "per_seed"]))
    print("wrote", write_json("real_time_to_accuracy", {"seeds": args.seeds, "epochs": args.epochs, "target": TARGET,
                                                        "lr": LR, "warmup_samples": WARMUP, "rows": rows,
                                                        "runs": runs}))


if __name__ == "__main__":
    main()
