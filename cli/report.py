"""`bpt report`: plots and a short summary of a job, for people."""

from __future__ import annotations

import os

import click

from .follow import result_metrics
from .jobs import connect_for, open_job, redis_url_option


MARKED_EVENTS = ("guardrail", "scheduler-revived", "finish-taken-over")  # rule and recovery events, on the plots


def plot_learning(summary: dict, path: str, events: list | None = None) -> None:
    """Test accuracy and loss against samples trained (or, for jobs that did not record it,
    seconds) and against the global version; the accuracy guardrail's steps and other rule
    events are dashed vertical lines at their version."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = summary["evaluations"]
    versions = [e["version"] for e in evals]
    if evals and all("samples" in e for e in evals):
        first, label = [e["samples"] for e in evals], "samples trained"
    else:
        start = summary["spec"].get("created") or (evals[0]["time"] if evals else 0)
        t0 = min([e["time"] for e in evals] + [start]) if evals else 0
        first, label = [e["time"] - t0 for e in evals], "seconds since the first evaluation"
    marks = [e for e in (events or []) if e.get("event") in MARKED_EVENTS and "version" in e]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for col, (xs, name) in enumerate(((first, label), (versions, "global version"))):
        axes[0][col].plot(xs, [e["accuracy"] for e in evals], marker="o", color="tab:blue", label="test")
        if any("top_k_accuracy" in e for e in evals):
            axes[0][col].plot(xs, [e.get("top_k_accuracy") for e in evals], marker=".", color="tab:cyan",
                              label=f"top-{summary['spec'].get('top_k')}")
            axes[0][col].legend()
        axes[1][col].plot(xs, [e["loss"] for e in evals], marker="o", color="tab:red")
        axes[1][col].set_xlabel(name)
        for mark in marks:
            at = mark["version"] if col == 1 else (np.interp(mark["version"], versions, xs) if evals else 0)
            for row in (0, 1):
                axes[row][col].axvline(at, color="tab:orange", linestyle="--", alpha=0.7)
            axes[0][col].annotate(mark["event"], (at, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                                  fontsize=7, color="tab:orange")
    axes[0][0].set_ylabel("test accuracy")
    axes[1][0].set_ylabel("test loss")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    fig.suptitle(f"job {summary['job_id']}: {summary['spec']['model']} on {summary['spec']['dataset']}, "
                 f"rule {summary['spec']['rule']['kind']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_workers(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["workers"])
    rates = [summary["workers"][n]["samples_per_second"] for n in names]
    tasks = [summary["workers"][n]["tasks"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(names) + 2), 4))
    bars = ax.bar(names, rates, color="tab:green")
    for bar, n in zip(bars, tasks):
        ax.annotate(f"{int(n)} tasks", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("samples/s while busy")
    ax.set_title("per-worker throughput")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_markdown(summary: dict) -> str:
    spec = summary["spec"]
    acc = summary["test_accuracy"]
    lines = [
        f"# Job {summary['job_id']}",
        "",
        f"- status: **{summary['status']}**; model `{spec['model']}` on `{spec['dataset']}`, rule `{spec['rule']['kind']}`, "
        f"{spec['epochs']} epochs, batch {spec['train']['batch_size']}, subsets of {spec['subset_size']}",
        f"- test accuracy: **{acc:.4f}**" if acc is not None else "- test accuracy: not evaluated yet",
        f"- versions: {summary['versions']}; pushes accepted {summary['accepted_pushes']}, rejected "
        f"{summary['rejected_pushes']}, invalid {summary['invalid_pushes']}; duplicate deliveries {summary['duplicate_deliveries']}",
        f"- staleness of accepted pushes: {summary['staleness_histogram']}",
    ]
    if summary["wall_seconds"]:
        lines.append(f"- wall time {summary['wall_seconds']:.1f} s, {summary['samples_per_second']:.0f} samples/s overall")
    noise = summary.get("noise_scale")
    if noise:
        capped = ", whose batches hold the training set" if noise.get("capped_at_training_set") else ""
        lines.append(f"- gradient noise scale about {noise['samples']:.0f} samples: beyond about "
                     f"{noise['workers_that_help']} training processes{capped}, more workers add samples, not speed "
                     f"(this job had {noise['training_processes']})")
    lines += ["", "| worker | tasks | samples | samples/s | inner |", "|---|---:|---:|---:|---|"]
    for name, w in summary["workers"].items():
        lines.append(f"| {name} | {int(w['tasks'])} | {int(w['samples'])} | {w['samples_per_second']:.0f} | {w.get('inner') or '-'} |")
    lines += ["", "![accuracy and loss](learning.png)", "", "![throughput](workers.png)", ""]
    return "\n".join(lines)


@click.command()
@click.argument("job_id")
@redis_url_option
@click.option("--out", "out_dir", default=None, help="Directory for learning.png, workers.png, summary.md (default ./bpt-runs/JOB/report).")
@click.pass_obj
def report(settings, job_id, redis_url, out_dir):
    """Plot test accuracy and loss against samples trained and version (rule events marked),
    per-worker throughput, and a summary."""
    settings, client = connect_for(settings, redis_url)
    summary = result_metrics(open_job(client, job_id))
    out_dir = out_dir or os.path.join(settings.out_dir, job_id, "report")
    os.makedirs(out_dir, exist_ok=True)
    plot_learning(summary, os.path.join(out_dir, "learning.png"), open_job(client, job_id).events())
    plot_workers(summary, os.path.join(out_dir, "workers.png"))
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary_markdown(summary))
    click.echo(f"wrote {out_dir}/learning.png, workers.png and summary.md")
