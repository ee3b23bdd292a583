"""Throughput and time to accuracy, side by side in one run: one PyTorch process (1 and 2
threads), PyTorch DDP with gloo (2 processes x 1 thread), and bpt with 1 and 2 workers
(AGWU, plain async, sync).

    python -m benchmarks.throughput [--seeds 0 1 2] [--cases lenet resnet] [--from-json PATH]

Cases: `lenet` is digits-aug at 28x28 with LeNet-5, `resnet` the 32x32 ResNet-style model on
`synthetic`. Same data, batch size (32 per process), learning rate and epochs everywhere.
Each run reports samples/s over its training wall time, seconds until the test accuracy
first reaches the case's target (interpolated between evaluations; about 12 a run, off the
clock everywhere: the baselines stop their clocks, and bpt's weights are snapshotted by the
client at those points and scored after the job, with the time each version was made), and
the final test accuracy; the table holds the median of the seeds.

Goals (issue 8): bpt at 2 workers >= 1.15 x the samples/s of one 2-thread process, and no
slower than DDP to the same accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from bpt.train import inner
from bpt.model import registry as models
from bpt.train import training
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.job_store import FINISHED
from bpt.broker.processes import free_port
from bpt.broker.weight_store import WeightStore
from bpt.workers.submit import submit

from .common import local_cluster, table, write_json

CASES = {
    "lenet": {"dataset": DatasetSpec("digits-aug", samples=60_000), "model": "lenet5", "epochs": 2, "target": 0.97},
    "resnet": {"dataset": DatasetSpec("synthetic", samples=4_000, size=32, channels=3), "model": "resnet-small",
               "epochs": 2, "target": 0.9},
}
EVALS = 12


def choices(case: str, seed: int, workers: int = 1, rule: str = "agwu") -> JobChoices:
    c = CASES[case]
    return JobChoices(c["dataset"], model=c["model"], epochs=c["epochs"], seed=seed, workers=workers, rule=rule)


def curve_summary(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds until accuracy first reached target, from (seconds, accuracy) points: linearly
    interpolated between the evaluation that reached it and the one before (evaluations are
    about 1.2 s apart on LeNet-5 here, so the first one that reached it says little alone)."""
    before = None
    for t, a in curve:
        if a >= target:
            if before is None:
                return t
            t0, a0 = before
            return t0 + (t - t0) * (target - a0) / (a - a0)
        before = (t, a)
    return None


def local_training(case: str, seed: int, threads: int, rank: int = 0, world: int = 1) -> dict:
    """One process's training; with world > 1, one DDP rank (gloo) training on its share of
    each batch round. Returns samples/s, an accuracy curve and the final accuracy (rank 0)."""
    torch.set_num_threads(threads)
    spec, data, _ = prepare(choices(case, seed))
    net = models.build_for(spec, seed=seed)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    stepper = inner.TorchStepper(model, training.make_optimizer(model, spec.train), threads)
    n = len(data.x_train)
    every = max(1, spec.epochs * n // (EVALS * spec.subset_size)) * spec.subset_size
    clock, curve, seen = 0.0, [], 0
    for epoch in range(spec.epochs):
        order = torch.Generator().manual_seed(seed * 1000 + epoch)
        perm = torch.randperm(n, generator=order).numpy()
        for start in range(0, n, every):
            idx = perm[start:start + every]
            idx = idx[:len(idx) - len(idx) % world]  # equal shares: ranks must run as many steps
            mine = idx[rank::world]
            began = time.perf_counter()
            training.train_pass(stepper, data.x_train[mine], data.y_train[mine], spec.train.batch_size,
                                seed=seed + epoch * 7919 + start)
            clock += time.perf_counter() - began
            seen += len(idx)
            if rank == 0:
                curve.append((clock, training.evaluate(net, data.x_test, data.y_test)[1]))  # not DDP's forward
            if world > 1:
                torch.distributed.barrier()
    return {"samples_per_s": seen / clock, "curve": curve, "final_accuracy": curve[-1][1] if curve else None}


def ddp(case: str, seed: int) -> dict:
    """Two single-thread ranks over gloo on loopback, as two subprocesses (JSON out)."""
    port = free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.throughput", "--ddp-rank", str(r), "--case", case,
                               "--seed", str(seed)], stdout=subprocess.PIPE, text=True, env=env) for r in (0, 1)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a DDP rank failed: {[p.returncode for p in procs]}")
    return json.loads(outs[0].strip().splitlines()[-1])


def ddp_rank(rank: int, case: str, seed: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = local_training(case, seed, threads=1, rank=rank, world=2)
        dist.barrier()  # without it, a rank now and then aborts at exit while the other still talks
    finally:
        dist.destroy_process_group()
    print(json.dumps(result))


def bpt_run(cluster, case: str, seed: int, workers: int, rule: str) -> dict:
    return bpt_curve(cluster, choices(case, seed, workers, rule))


def bpt_curve(cluster, job: JobChoices, evals: int = EVALS) -> dict:
    """A bpt job whose accuracy curve comes from snapshots: the client pulls the global weights
    about `evals` times a run and scores them after the job, so that, as for the baselines, no
    evaluation runs on the clock (bpt's in-task evaluations are switched off here)."""
    settings, app, client = cluster
    spec, data, weights = prepare(job)
    versions = spec.total_waves if spec.rule.synchronous else spec.total_tasks
    spec = dataclasses.replace(spec, eval_every=versions + 1)  # only the final evaluation
    every = max(1, versions // evals)
    store = submit(app, client, settings, spec, data, weights)
    weight_store = WeightStore(client, spec.job_id)
    snapshots, next_version = [], every
    while store.status() not in FINISHED:
        if int(client.hget(weight_store.keys.weights, "version") or 0) >= next_version:
            pulled = weight_store.pull()
            snapshots.append((pulled.version, {k: v.copy() for k, v in pulled.weights.items()}))
            next_version = pulled.version + every
        time.sleep(0.005)
    state = store.state()
    started = state["started"]
    made = {}  # the first event naming each version made it: under sync, a round's commit (its next round's
    for e in store.events():  # stages name the same version, later)
        if e["event"] in ("push-accepted", "round-merged"):
            made.setdefault(e["version"], e["time"])
    model = models.build_for(spec)
    curve = []
    for version, snapshot in snapshots:
        training.load_numpy_state(model, snapshot)
        curve.append((made.get(version, max(made.values())) - started,
                      training.evaluate(model, data.x_test, data.y_test)[1]))
    wall = max(made.values()) - started  # the last merge; the job's final evaluation is off the clock too
    curve.append((wall, state["test_accuracy"]))
    return {"samples_per_s": spec.epochs * spec.n_train / wall, "curve": curve,
            "final_accuracy": state["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--ddp-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="summarise the runs saved in a previous run's JSON instead of running")
    args = parser.parse_args()
    if args.ddp_rank is not None:
        ddp_rank(args.ddp_rank, args.case, args.seed)
        return
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        runs = {tuple(key.split("|", 1)): value for key, value in saved["runs"].items()}
        report(runs, sorted({case for case, _ in runs}, key=list(CASES).index), saved["seeds"])
        return

    runs: dict[tuple[str, str], list[dict]] = {}
    for case in args.cases:
        for seed in args.seeds:
            runs.setdefault((case, "pytorch 1 thread"), []).append(local_training(case, seed, 1))
            runs.setdefault((case, "pytorch 2 threads"), []).append(local_training(case, seed, 2))
            runs.setdefault((case, "ddp gloo 2x1"), []).append(ddp(case, seed))
        for workers, rules in ((1, ["agwu"]), (2, ["agwu", "async", "sync"])):
            with local_cluster(workers) as cluster:
                for rule in rules:
                    for seed in args.seeds:
                        runs.setdefault((case, f"bpt {workers}w {rule}"), []).append(
                            bpt_run(cluster, case, seed, workers, rule))
    report(runs, args.cases, args.seeds)


def report(runs: dict[tuple[str, str], list[dict]], cases: list[str], seeds: list[int]) -> None:
    """Print the table of medians and write the JSON, runs (curves) included."""
    rows = []
    for (case, name), results in runs.items():
        target = CASES[case]["target"]
        reached = [curve_summary(r["curve"], target) for r in results]
        rows.append({"case": case, "system": name,
                     "samples_per_s": statistics.median(r["samples_per_s"] for r in results),
                     f"s_to_target": statistics.median(t if t is not None else float("inf") for t in reached),
                     "reached": f"{sum(t is not None for t in reached)}/{len(reached)}",
                     "final_acc": statistics.median(r["final_accuracy"] for r in results)})
    for case in cases:
        base = {r["system"]: r for r in rows if r["case"] == case}
        for r in rows:
            if r["case"] == case:
                r["x_2thread"] = r["samples_per_s"] / base["pytorch 2 threads"]["samples_per_s"]
                r["time_vs_ddp"] = r["s_to_target"] / base["ddp gloo 2x1"]["s_to_target"]
    print("targets: " + ", ".join(f"{c} {CASES[c]['target']:.0%}" for c in cases)
          + f"; median of seeds {seeds}; seconds to target interpolated between evaluations")
    print(table(rows, list(rows[0])))
    print("wrote", write_json("throughput", {"seeds": seeds, "cases": {c: {k: str(v) for k, v in CASES[c].items()}
                                                                        for c in cases},
                                             "rows": rows, "runs": {f"{c}|{n}": v for (c, n), v in runs.items()}}))


if __name__ == "__main__":
    main()
