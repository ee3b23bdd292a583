"""Following a job from the terminal, and writing its results to disk."""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import click
from tqdm import tqdm

from bpt.train import learning
from bpt.job import metrics
from bpt.settings import DEFAULT_HEARTBEAT_TIMEOUT
from bpt.errors import BptError, ConfigError, DidNotLearn, JobFailed
from bpt.broker import clock, codec
from bpt.broker.job_store import FINISHED, JobStore
from bpt.broker.weight_shards import open_shards
from bpt.broker.weight_store import WeightStore


def follow(store: JobStore, poll_seconds: float, show: bool = True, alive=None, board: "LiveBoard | None" = None,
           checkpoints: "Checkpointer | None" = None) -> dict:
    """Wait for the job to end, with a progress bar; returns its final state.

    alive: optional callable returning False when the local workers have all died; board:
    a LiveBoard, given each new evaluation as it comes (and the last ones at the end);
    checkpoints: a Checkpointer, asked at every poll whether one is due."""
    spec = store.spec()
    bar = tqdm(total=spec.total_tasks, unit="subset", disable=not show, dynamic_ncols=True,
               desc=f"job {spec.job_id}", leave=True)
    shown_lost = ""
    try:
        while True:
            state = store.state()
            done = int(state.get("accepted", 0) + state.get("rejected", 0) + state.get("invalid", 0))
            bar.update(max(0, min(done, spec.total_tasks) - bar.n))
            evals = store.client.lrange(store.keys.evals, -1, -1)
            last = json.loads(evals[0]) if evals else {}
            samples = sum(w.get("samples", 0) for w in store.worker_stats().values())
            elapsed = time.time() - state.get("started", time.time())
            version = store.client.hget(store.keys.weights, "version")
            bar.set_postfix(epoch=f"{int(state.get('epoch', 0)) + 1}/{spec.epochs}", v=int(version or 0),
                            loss=f"{last.get('loss', float('nan')):.3f}", acc=f"{last.get('accuracy', float('nan')):.3f}",
                            sps=f"{samples / elapsed:.0f}" if elapsed > 0 else "-", refresh=False)
            if board is not None:
                board.update(store, spec)
            if checkpoints is not None:
                checkpoints.maybe(bar.write)
            lost = state.get("lost_workers", "")
            if lost != shown_lost:
                for name in set(lost.split()) - set(shown_lost.split()):
                    bar.write(f"worker {name} lost (no heartbeat): its tasks go to the others", file=sys.stderr)
                shown_lost = lost
            if state.get("status") in FINISHED:
                bar.refresh()
                return state
            if alive is not None and not alive():
                raise BptError("every local worker has exited; see their logs")
            time.sleep(poll_seconds)
    finally:
        bar.close()


class Checkpointer:
    """Writes DIR/checkpoint.safetensors (broker.checkpoint: the job's weights and progress,
    what `bpt train --resume DIR` continues from) every `every` seconds while a job is
    followed, and when asked (Ctrl-C). A write that fails is a warning: the job goes on."""

    FILE = "checkpoint.safetensors"

    def __init__(self, store: JobStore, out_dir: str, every: float, settings=None):
        self.store, self.every, self.settings = store, every, settings
        self.path = os.path.join(out_dir, self.FILE)
        self.last = time.monotonic()
        self.written_version = None

    def maybe(self, say=None) -> None:
        if self.every and time.monotonic() - self.last >= self.every:
            self.write(say)

    def write(self, say=None) -> str | None:
        from bpt.broker import checkpoint

        self.last = time.monotonic()
        shards = open_shards(self.settings.weights_url, self.settings.connect_timeout, self.settings.socket_timeout) \
            if self.settings is not None and self.settings.weights_url else None
        try:
            ckpt = checkpoint.read(self.store, shards)
            checkpoint.write_file(ckpt, self.path)
            self.written_version = ckpt.version
            return self.path
        except Exception as e:  # a checkpoint is a convenience: never the end of the job
            (say or (lambda m: click.echo(m, err=True)))(f"warning: no checkpoint written: {e}")
            return None
        finally:
            if shards is not None:
                shards.close()

    def discard(self) -> None:
        """The job is done: its model supersedes any checkpoint."""
        for path in (self.path, self.path + ".partial"):
            if os.path.exists(path):
                os.remove(path)


def result_metrics(store: JobStore) -> dict:
    state = store.state()
    version = store.client.hget(store.keys.weights, "version")
    if version is not None:
        state["version"] = int(version)  # the live version, also while the job runs
    spec = json.loads(store.client.get(store.keys.spec))
    summary = metrics.summarize(spec, state, store.staleness_histogram(), store.worker_stats(), store.evals(),
                                store.gradient_sums())
    summary.update(cluster_view(store.client, spec, summary["status"], list(summary["workers"])))
    return summary


def cluster_view(client, spec: dict, status: str, trained_by: list[str],
                 timeout: float = DEFAULT_HEARTBEAT_TIMEOUT) -> dict:
    """What the cluster means for the job now: its workers that are no longer alive (marked
    lost in `bpt status`), and why a queued job is still queued."""
    from bpt.job import reconcile
    from bpt.broker import worker_registry

    now = clock.now(client)
    registry = worker_registry.workers(client)
    alive = {n: w for n, w in registry.items() if worker_registry.is_alive(w, now, timeout)}
    capable = [n for n, w in alive.items()
               if reconcile.can_train(spec.get("model", ""), spec.get("plugin", ""), w.get("plugins") or {})]
    lost = [n for n in trained_by if n not in alive] if status not in FINISHED else []
    return {"lost_workers": lost,
            "queued_reason": reconcile.why_queued(status, len(alive), len(capable), spec.get("model", ""))}


def model_file_bytes(store: JobStore, settings=None) -> tuple[bytes, int]:
    """The job's global weights as a safetensors file whose metadata names the model, its
    input shape and class count (what `bpt predict` needs to rebuild it): (bytes, version)."""
    spec = store.spec()
    shards = open_shards(settings.weights_url, settings.connect_timeout, settings.socket_timeout) \
        if settings is not None and settings.weights_url else None
    try:
        pulled = WeightStore(store.client, store.job_id, script_table={}, shards=shards).pull()
    finally:
        if shards is not None:
            shards.close()
    return codec.encode_weights(pulled.weights, metadata=model_metadata(spec, pulled.version)), pulled.version


def model_metadata(spec, version: int, **extra) -> dict[str, str]:
    """What `bpt predict` needs to rebuild a model file's network: its name, input shape,
    class count, layers or plug-in version, and the normalisation."""
    meta = {"job_id": spec.job_id, "model": spec.model, "input_shape": json.dumps(list(spec.input_shape)),
            "num_classes": str(spec.num_classes), "version": str(version), **extra}
    if spec.architecture:
        meta["architecture"] = spec.architecture
    if spec.plugin:
        meta["plugin"] = spec.plugin
    if spec.class_names:  # `bpt predict` scores a folder by these names, and writes them in its CSV
        meta["classes"] = json.dumps(list(spec.class_names))
    if spec.data_mean:  # image folders and array directories: how `bpt predict` must normalise
        meta["normalisation"] = json.dumps({"mean": list(spec.data_mean), "std": list(spec.data_std)})
    return meta


def write_outputs(store: JobStore, out_dir: str, settings=None) -> dict:
    """DIR/model.safetensors, DIR/metrics.json and DIR/metrics.csv (one row per evaluation)."""
    blob, _ = model_file_bytes(store, settings)
    summary = result_metrics(store)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(blob)
    best = store.best_weights()
    if best is not None:  # the best-validation version (chosen on validation, never on test)
        best_blob, version, val = best
        meta = model_metadata(store.spec(), version, val_accuracy=repr(val))
        with open(os.path.join(out_dir, "best.safetensors"), "wb") as f:
            f.write(codec.encode_weights(codec.decode_weights(best_blob), metadata=meta))
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=2)
    state = store.state()
    with open(os.path.join(out_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=metrics.CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(metrics.evaluation_rows(summary["evaluations"], state.get("started") or state.get("created", 0)))
    return summary


def tensorboard_writer_class():
    """torch's SummaryWriter, which needs the tensorboard package: checked before a job
    starts, so a missing package is an error at once rather than after the training."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'bpt[tensorboard]'") from None
    return SummaryWriter


class LiveBoard:
    """TensorBoard event files of a job's evaluations, written as they happen by whichever
    process follows the job (`bpt train` attached, `bpt wait --tensorboard`), one run per job
    under log_dir: test accuracy, loss, top-k, validation accuracy, the pushing task's train
    loss and the learning rate of the schedule at that point, against samples trained (the
    step). They used to be written once, at the end."""

    def __init__(self, log_dir: str, job_id: str):
        self.path = os.path.join(log_dir, job_id)
        self.writer = tensorboard_writer_class()(log_dir=self.path)
        self.seen = 0

    def update(self, store: JobStore, spec=None) -> int:
        """Write the evaluations added since the last update; returns how many."""
        new = [json.loads(e) for e in store.client.lrange(store.keys.evals, self.seen, -1)]
        for e in new:
            step = int(e.get("samples", e["version"]))
            self.writer.add_scalar("test/accuracy", e["accuracy"], step, walltime=e.get("time"))
            self.writer.add_scalar("test/loss", e["loss"], step, walltime=e.get("time"))
            self.writer.add_scalar("version", e["version"], step, walltime=e.get("time"))
            for key, tag in (("top_k_accuracy", "test/top_k_accuracy"), ("val_accuracy", "val/accuracy"),
                             ("train_loss", "train/loss")):
                if key in e:
                    self.writer.add_scalar(tag, e[key], step, walltime=e.get("time"))
            if spec is not None and "epoch" in e:  # the schedule's rate there, for the submitted worker count
                self.writer.add_scalar("train/lr", spec.lr_at(int(e["epoch"]), int(e["version"]), live=spec.workers),
                                       step, walltime=e.get("time"))
        self.seen += len(new)
        if new:
            self.writer.flush()
        return len(new)

    def close(self) -> None:
        self.writer.close()


def finish(store: JobStore, state: dict, out_dir: str, as_json: bool, tensorboard=None,
           settings=None, resume_with: str | None = None) -> None:
    """Write outputs and report, or raise JobFailed for a failed or cancelled job (saying
    `bpt train --resume RESUME_WITH` continues it; default: the job id on this server)."""
    if state.get("status") != "done":
        resumable = state.get("status") in ("failed", "cancelled") and store.spec().partition == "greedy"
        hint = f"; `bpt train --resume {resume_with or store.job_id}` continues it" if resumable else ""
        raise JobFailed(f"job {store.job_id} {state.get('status')}: {state.get('error', 'no reason recorded')}{hint}")
    summary = write_outputs(store, out_dir, settings)
    Checkpointer(store, out_dir, 0).discard()
    if tensorboard:  # the final evaluation too (a LiveBoard wrote the others as they came)
        board = LiveBoard(tensorboard, store.job_id) if isinstance(tensorboard, str) else tensorboard
        board.update(store, store.spec())
        board.close()
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k not in ("evaluations", "spec")}))
    else:
        click.echo(f"job {store.job_id} done: test accuracy {summary['test_accuracy']:.4f} after "
                   f"{summary['versions']} versions in {summary['wall_seconds']:.1f}s "
                   f"({summary['samples_per_second']:.0f} samples/s); "
                   f"{summary['rejected_pushes']} rejected pushes; wrote {out_dir}/"
                   + (f" ({summary['reason']})" if summary.get("reason") and "target" in summary["reason"] else ""))
    if summary.get("warning"):
        click.echo(f"warning: {summary['warning']}", err=True)
    if summary.get("scaling_warning"):
        click.echo(f"warning: {summary['scaling_warning']}", err=True)
    spec = store.spec()
    if summary["test_accuracy"] is not None and learning.near_chance(summary["test_accuracy"], spec.num_classes):
        raise DidNotLearn(f"job {store.job_id} ended at test accuracy {summary['test_accuracy']:.4f}, no better "
                          f"than chance for {spec.num_classes} classes (outputs written to {out_dir}/)")
