"""A job's metrics, summarised from what the broker recorded (pure: dicts in, dict out)."""

from __future__ import annotations


def summarize(spec: dict, state: dict, staleness: dict[int, int], workers: dict[str, dict],
              evals: list[dict], gradients: dict | None = None) -> dict:
    started = state.get("started") or state.get("created", 0)
    finished = state.get("finished")
    wall = (finished - started) if finished else None
    samples = sum(w.get("samples", 0) for w in workers.values())
    last = evals[-1] if evals else {}
    return {
        "job_id": spec.get("job_id"),
        "status": state.get("status"),
        "epoch": state.get("epoch"),
        "test_accuracy": state.get("test_accuracy", last.get("accuracy")),
        "test_loss": state.get("test_loss", last.get("loss")),
        "versions": state.get("version", last.get("version", 0)),
        "accepted_pushes": state.get("accepted", 0),
        "rejected_pushes": state.get("rejected", 0),
        "invalid_pushes": state.get("invalid", 0),
        "duplicate_deliveries": state.get("duplicates", 0),
        "staleness_histogram": {str(k): v for k, v in sorted(staleness.items())},
        "wall_seconds": wall,
        "samples_trained": samples,
        "samples_per_second": samples / wall if wall else None,
        "workers": {name: {"samples": w.get("samples", 0), "tasks": w.get("tasks", 0),
                           "busy_seconds": w.get("seconds", 0), "samples_per_second": w.get("samples_per_second", 0),
                           "inner": w.get("inner"), "device": w.get("device"),
                           "mean_staleness": w.get("mean_staleness")}
                    for name, w in sorted(workers.items())},
        "evaluations": evals,
        "spec": spec,
        "error": state.get("error"),
        "warning": state.get("warning"),
        "reason": state.get("reason"),  # why a done job ended: all epochs, its target accuracy, its patience
        "best_version": state.get("best_blob_version"),  # the best-validation version kept (best.safetensors)
        "best_val_accuracy": state.get("best_blob_val"),
        **scaling(spec, workers, gradients or {}),
    }


def training_processes(submitted: int, workers: dict[str, dict]) -> int:
    """How many training processes a job used, for its warnings: those it was submitted for,
    or the workers that trained for it (JobStore.worker_stats) if more joined."""
    return max(submitted, len(workers))


def scaling(spec: dict, workers: dict[str, dict], gradients: dict) -> dict:
    """How many workers help (bpt.train.noise_scale), and a warning when the job used more."""
    from bpt.train.noise_scale import from_sums, latest_sums

    latest = latest_sums(gradients)
    found = from_sums(latest, int(spec.get("n_train") or 0))  # workers capped at the training set
    if found is None:
        return {"noise_scale": None, "scaling_warning": None}
    used = training_processes(int(spec.get("workers") or 1), workers)
    return {"noise_scale": {"samples": round(found.noise_batch, 1), "workers_that_help": found.workers,
                            "capped_at_training_set": bool(found.training_samples),
                            "training_processes": used, "pushes_measured": int(latest.get("pushes", 0))},
            "scaling_warning": (f"{used} training processes: {found.message()}" if used > found.workers else None)}


CSV_COLUMNS = ("version", "epoch", "samples", "wall_seconds", "train_loss", "test_loss", "test_accuracy",
               "top_k_accuracy", "val_accuracy", "guard_level", "final")


def evaluation_rows(evals: list[dict], started: float) -> list[dict]:
    """One row per evaluation for metrics.csv: what a user plots (accuracy and loss against
    samples seen or wall time). train_loss is the local loss of the task whose push made the
    version (under sync, of the task that completed the round: one of its K); a column a job
    did not measure is empty."""
    rows = []
    for e in evals:
        row = {c: e.get(c, "") for c in CSV_COLUMNS}
        row.update(test_loss=e.get("loss", ""), test_accuracy=e.get("accuracy", ""),
                   wall_seconds=round(e["time"] - started, 3) if "time" in e and started else "",
                   final=int(bool(e.get("final"))))
        rows.append(row)
    return rows
