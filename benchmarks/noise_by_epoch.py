"""The gradient noise scale epoch by epoch, from one process: why a job's estimate is taken
from its latest epochs (bpt.train.noise_scale.latest_sums), not averaged over the job.

    python -m benchmarks.noise_by_epoch [--cases fashion glyphs 3class]

One plain process trains each case with the workers' recipe and measures, as a worker's task
does (training.GradientMeter: the halves of every fourth batch), over each whole epoch; the
estimate of each epoch, the workers it says help (B_noise over a batch of 32) and the test
accuracy after it are printed and written to benchmarks/results/noise_by_epoch.json.
Cases: `fashion` (../shared/datasets/fashion-mnist.npz, LeNet-5, SGD 0.01, 6 epochs),
`glyphs` (3,000 glyph images, examples/models/small-cnn16.json, AdamW 0.003 cosine, 12
epochs) and `3class` (600 of them in 3 classes, as benchmarks.guardrail's cases).
"""

from __future__ import annotations

import argparse
import os

import torch

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.model import registry as models
from bpt.train import inner, noise_scale, training

from .common import table, write_json
from .guardrail import MODEL, folder
from .time_to_accuracy import DATA


def choices(case: str, data_path: str) -> JobChoices:
    if case == "fashion":
        return JobChoices(DatasetSpec(data_path, seed=0), model="lenet5", epochs=6, lr=0.01, lr_schedule="constant",
                          subset_size=256)
    images, classes = (600, 3) if case == "3class" else (3000, 10)
    return JobChoices(DatasetSpec(folder(images, classes, 0), size=16), model=MODEL, epochs=12, optimizer="adamw", lr=0.003,
                      lr_schedule="cosine", subset_size=256)


def run(case: str, data_path: str) -> list[dict]:
    spec, data, _ = prepare(choices(case, data_path))
    model = models.build_for(spec, seed=0)
    stepper = inner.TorchStepper(model, training.make_optimizer(model, spec.train), 1)
    rows = []
    for epoch in range(spec.epochs):
        meter = training.GradientMeter(spec.train.batch_size)
        training.train_pass(stepper, data.x_train, data.y_train, spec.train.batch_size, seed=epoch, meter=meter)
        stats = meter.result()
        found = noise_scale.estimate(stats.small, stats.big, stats.batch, stats.batch * stats.batches)
        rows.append({"case": case, "epoch": epoch + 1, "noise_scale": found.noise_batch if found else None,
                     "workers_that_help": found.workers if found else None,
                     "test_accuracy": training.evaluate(model, data.x_test, data.y_test)[1]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("BPT_FASHION_MNIST", DATA))
    parser.add_argument("--cases", nargs="+", default=["fashion", "glyphs", "3class"],
                        choices=["fashion", "glyphs", "3class"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for case in args.cases for row in run(case, args.data)]
    print(table(rows, ["case", "epoch", "noise_scale", "workers_that_help", "test_accuracy"]))
    print("wrote", write_json("noise_by_epoch", {"rows": rows}))


if __name__ == "__main__":
    main()
