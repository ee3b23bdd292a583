"""Inner layer: samples/s of one training process with PyTorch's intra-op threads (`torch`)
against bpt's micro-batch tasks (`tasks`), at T = 1 and 2 threads, side by side.

    python -m benchmarks.inner_layer [--seconds 4]

Models: LeNet-5 on 28x28 inputs and the 32x32 ResNet-style model on 3x32x32 inputs, batch
32 (bpt's default), 64 and 256. Each (strategy, threads) pair runs in its own long-lived
process, so neither pays for the other's thread settings; the processes take turns in
5 rounds per cell (drift in the machine's speed hits all alike) and each cell reports the
median round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from .common import table, write_json

CASES = [("lenet5", (1, 28, 28)), ("resnet-small", (3, 32, 32))]
BATCHES = (32, 64, 256)
ROUNDS = 5


def serve(strategy: str, threads: int) -> None:
    """Child process: for each request line (model, batch, seconds) print samples/s."""
    import torch

    from bpt.train import inner
    from bpt.model import registry as models
    from bpt.train import training

    steppers = {}
    for line in sys.stdin:
        name, batch, seconds = json.loads(line)
        shape = dict(CASES)[name]
        if (name, batch) not in steppers:
            model = models.build_model(name, shape, 10, seed=0)
            params = training.TrainParams(batch_size=batch, lr=0.01, momentum=0.9)
            steppers[(name, batch)] = inner.make_stepper(strategy, model, params, threads)
        stepper = steppers[(name, batch)]
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        stepper.step(x, y)  # warm-up
        steps, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            stepper.step(x, y)
            steps += 1
        print(json.dumps(steps * batch / (time.perf_counter() - began)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per cell and strategy")
    parser.add_argument("--serve", nargs=2, metavar=("STRATEGY", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve[0], int(args.serve[1]))

    procs = {(s, t): subprocess.Popen([sys.executable, "-m", "benchmarks.inner_layer", "--serve", s, str(t)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for t in (1, 2) for s in ("torch", "tasks")}
    rows = []
    try:
        for name, _ in CASES:
            for batch in BATCHES:
                for threads in (1, 2):
                    runs = {"torch": [], "tasks": []}
                    for _ in range(ROUNDS):
                        for strategy in runs:
                            proc = procs[(strategy, threads)]
                            proc.stdin.write(json.dumps([name, batch, args.seconds / ROUNDS]) + "\n")
                            proc.stdin.flush()
                            runs[strategy].append(json.loads(proc.stdout.readline()))
                    torch_sps, tasks_sps = statistics.median(runs["torch"]), statistics.median(runs["tasks"])
                    rows.append({"model": name, "batch": batch, "threads": threads, "torch_sps": round(torch_sps),
                                 "tasks_sps": round(tasks_sps), "tasks/torch": tasks_sps / torch_sps})
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    print(table(rows, ["model", "batch", "threads", "torch_sps", "tasks_sps", "tasks/torch"]))
    winners = {f"{r['model']}/batch {r['batch']}": "tasks" if r["tasks/torch"] > 1 else "torch"
               for r in rows if r["threads"] == 2}
    print("faster at 2 threads:", winners)
    print("wrote", write_json("inner_layer", {"rows": rows, "winners_at_2_threads": winners, "args": vars(args)}))


if __name__ == "__main__":
    main()
