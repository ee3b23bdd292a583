"""PNG plots from the benchmarks' JSON results (those that exist)."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .common import RESULTS  # noqa: E402


def _load(name: str) -> dict | None:
    path = os.path.join(RESULTS, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _save(fig, name: str) -> str:
    path = os.path.join(RESULTS, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def weight_store(data: dict) -> str:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['model_mb']:g} MB" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ratio"] for r in rows], 0.4, label="bpt / redis-py SET+GET")
    ax.bar([x + 0.2 for x in xs], [r["ratio_to_floor"] for r in rows], 0.4, label="bpt / zero-copy SET+GET")
    ax.axhline(data["goal"], color="k", ls="--", lw=1, label=f"goal {data['goal']}")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("time ratio (pull + push)")
    ax.legend(fontsize=8)
    return _save(fig, "weight_store")


def overhead(data: dict) -> str:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sizes = [r["subset"] for r in rows]
    ax.plot(sizes, [100 * r["task_overhead"] for r in rows], "o-", label="per task (outside forward/backward)")
    ax.plot(sizes, [100 * r["job_overhead"] for r in rows], "s-", label="whole job (also queueing, idle)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("subset size (samples)")
    ax.set_ylabel("overhead, % of wall time")
    ax.legend(fontsize=8)
    return _save(fig, "overhead")


def throughput(data: dict) -> str:
    runs = data["runs"]
    cases = sorted({key.split("|")[0] for key in runs})
    fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 3.8), squeeze=False)
    for ax, case in zip(axes[0], cases):
        for key, results in runs.items():
            c, name = key.split("|")
            if c != case:
                continue
            curve = results[0]["curve"]  # the first seed
            ax.plot([t for t, _ in curve], [a for _, a in curve], label=name)
        ax.set_title(f"{case}: test accuracy over training time (seed {data['seeds'][0]})")
        ax.set_xlabel("seconds")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.5, 1.0)
        ax.legend(fontsize=7)
    return _save(fig, "throughput")


def pressure(data: dict) -> str:
    rows = [r for r in data["rows"] if r["rule"] != "pytorch"]
    base = next(r["accuracy"] for r in data["rows"] if r["rule"] == "pytorch")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    configs = sorted({(r["rule"], str(r["guardrail"])) for r in rows})
    for rule, guard in configs:
        mine = [r for r in rows if r["rule"] == rule and str(r["guardrail"]) == guard]
        ax.plot([r["workers"] for r in mine], [r["accuracy"] for r in mine], "o-",
                label=f"{rule}" + ("" if rule == "sync" else f", guardrail {guard}"))
    ax.axhline(base, color="k", ls="--", lw=1, label="one PyTorch process")
    ax.set_xlabel("workers")
    ax.set_ylabel("final test accuracy (median)")
    ax.legend(fontsize=7)
    return _save(fig, "pressure")


def time_to_accuracy(data: dict) -> str:
    """Left: speed-up in time to target over the best single process, by K, per system and
    cluster. Right: test accuracy over virtual time at the largest K (the first seed)."""
    summary = data["summary"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for system in dict.fromkeys(r["system"] for r in summary if r["system"] != "one process"):
        for cluster, style in (("equal", "o-"), ("slow", "s--")):
            mine = [r for r in summary if r["system"] == system and r["cluster"] == cluster]
            if mine:
                left.plot([r["workers"] for r in mine], [r["speedup"] or 0 for r in mine], style,
                          label=f"{system} ({cluster})")
    left.set_xscale("log", base=2)
    left.set_xlabel("workers K")
    left.set_ylabel("speed-up in time to target (0: not reached)")
    left.legend(fontsize=7)
    top = max(r["workers"] for r in data["rows"])
    seed = data["rows"][0]["seed"]
    for r in data["rows"]:
        if r["seed"] == seed and r["cluster"] == "equal" and r["workers"] in (1, top):
            right.plot([c[1] for c in r["curve"]], [c[2] for c in r["curve"]], label=f"{r['system']} K={r['workers']}")
    right.axhline(data["args"]["target"], color="k", ls=":", lw=1)
    right.set_xscale("log")
    right.set_xlabel("virtual seconds")
    right.set_ylabel("test accuracy (screened far below the target)")
    right.legend(fontsize=7)
    return _save(fig, data["args"].get("out", "time_to_accuracy"))


def draw_all() -> list[str]:
    out = []
    for name, draw in (("weight_store", weight_store), ("overhead", overhead), ("throughput", throughput),
                       ("pressure", pressure), ("time_to_accuracy", time_to_accuracy)):
        data = _load(name)
        if data is not None:
            out.append(draw(data))
    return out
