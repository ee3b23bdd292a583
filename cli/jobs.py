"""`bpt jobs`, `bpt status`, `bpt wait`, `bpt cancel`: follow and control submitted jobs."""

from __future__ import annotations

import json
import os
import time

import click

from bpt.errors import ConfigError, UnknownJob
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED, JobStore, collect_garbage, list_jobs

from .follow import finish, follow, result_metrics

redis_url_option = click.option("--redis-url", envvar="BPT_REDIS_URL", default=None,
                                help="The Redis server the job runs on (or BPT_REDIS_URL).")


def connect_for(settings, redis_url):
    settings = settings.override(redis_url=redis_url)
    if settings.redis_url is None:
        raise ConfigError("this command needs --redis-url or BPT_REDIS_URL (embedded jobs end with bpt train)")
    return settings, connect(settings.redis_url, settings.connect_timeout, settings.socket_timeout)


def open_job(client, job_id) -> JobStore:
    """The job's store, or UnknownJob with a clear message. Its spec is not parsed here:
    checking it imports torch (the model registry), which read-only commands do without."""
    store = JobStore(client, job_id)
    if not store.exists():
        raise UnknownJob(f"no job {job_id!r} on this Redis server (see `bpt jobs`)")
    return store


@click.command()
@click.argument("job_id")
@redis_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until the job ends (Ctrl-C stops watching).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between redraws.")
@click.pass_obj
def status(settings, job_id, redis_url, as_json, watch, interval):
    """Show a job's state and metrics so far: epoch, version, accuracy, and per worker its
    throughput and the mean staleness of its accepted pushes."""
    _, client = connect_for(settings, redis_url)
    store = open_job(client, job_id)
    if not watch:
        summary = result_metrics(store)
        click.echo(json.dumps(summary) if as_json else "\n".join(status_lines(summary)))
        return
    redraw = os.isatty(1) and not as_json  # a terminal: one table in place; a pipe or a file: one per interval
    try:
        while True:
            summary = result_metrics(store)
            if redraw:
                click.clear()
            click.echo(json.dumps(summary) if as_json else "\n".join(status_lines(summary)
                                                                       + ([""] if not redraw else [])))
            if summary["status"] in FINISHED:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; job {job_id} goes on", err=True)


def status_lines(summary: dict) -> list[str]:
    spec = summary["spec"]
    acc = summary["test_accuracy"]
    from bpt.plan import partition

    subsets = len(partition.subsets(spec["n_train"], spec["subset_size"]))  # as the job cut them (a small tail joins the last)
    lines = [f"job {summary['job_id']}: {summary['status']}  model {spec['model']} on {spec['dataset']}  "
             f"rule {spec['rule']['kind']}",
             f"  epoch {int(summary.get('epoch') or 0) + 1}/{spec['epochs']}  version {summary['versions']}  "
             f"accepted {summary['accepted_pushes']}  rejected {summary['rejected_pushes']}  invalid "
             f"{summary['invalid_pushes']}  of {spec['epochs']} x {subsets} subsets",
             f"  test accuracy {acc:.4f}" if acc is not None else "  no evaluation yet"]
    if summary["workers"]:
        lines.append(f"  {'worker':<28} {'tasks':>6} {'samples/s':>10} {'staleness':>10}  device")
    lost = set(summary.get("lost_workers") or ())
    for name, w in summary["workers"].items():
        stale = w.get("mean_staleness")
        lines.append(f"  {name:<28} {int(w['tasks']):>6} {w['samples_per_second']:>10.0f} "
                     f"{'-' if stale is None else f'{stale:.1f}':>10}  {w.get('device') or '-'}"
                     + ("  LOST (no heartbeat)" if name in lost else ""))
    if summary.get("queued_reason"):
        lines.append(f"  queued: {summary['queued_reason']}")
    noise = summary.get("noise_scale")
    if noise:
        most = "at most " if noise.get("capped_at_training_set") else "about "  # NoiseEstimate.within
        lines.append(f"  gradient noise scale about {noise['samples']:.0f} samples: {most}{noise['workers_that_help']} "
                     f"training processes help (from the latest {noise['pushes_measured']} pushes measured)")
    for label, key in (("ended", "reason"), ("error", "error"), ("warning", "warning"), ("warning", "scaling_warning")):
        if summary.get(key):
            lines.append(f"  {label}: {summary[key]}")
    return lines


@click.command()
@click.argument("job_id")
@redis_url_option
@click.option("--out", "out_dir", default=None, help="Where to write the results (default ./bpt-runs/JOB).")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON line.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--tensorboard", "tensorboard_dir", default=None,
              help="Write TensorBoard event files of the evaluations to DIR/JOB as they happen (needs the "
                   "tensorboard package), from the job's start on.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=5.0, show_default=True, metavar="MINUTES",
              help="Write OUT/checkpoint.safetensors this often while waiting (and on Ctrl-C): `bpt train "
                   "--resume OUT` continues the job from it, on this server or another; 0: only on Ctrl-C.")
@click.pass_obj
def wait(settings, job_id, redis_url, out_dir, as_json, quiet, tensorboard_dir, checkpoint_every):
    """Follow a job with a progress bar until it ends, then write its model and metrics."""
    from .follow import Checkpointer

    settings, client = connect_for(settings, redis_url)
    store = open_job(client, job_id)
    board = None
    if tensorboard_dir:
        from .follow import LiveBoard

        board = LiveBoard(tensorboard_dir, job_id)
    out_dir = out_dir or os.path.join(settings.out_dir, job_id)
    checkpoints = Checkpointer(store, out_dir, checkpoint_every * 60, settings)
    try:
        state = follow(store, settings.poll_seconds, show=not quiet, board=board, checkpoints=checkpoints)
    except KeyboardInterrupt:
        path = checkpoints.write()
        click.echo(f"\nstopped waiting; job {job_id} goes on" + (
            f" (checkpoint of version {checkpoints.written_version} written to {path})" if path else ""), err=True)
        raise
    finish(store, state, out_dir, as_json, board, settings=settings)


@click.command()
@redis_url_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs(settings, redis_url, as_json):
    """List the jobs on a Redis server."""
    _, client = connect_for(settings, redis_url)
    rows = []
    for job_id in list_jobs(client):
        try:
            state = JobStore(client, job_id).state()
        except UnknownJob:  # deleted between the two reads
            continue
        rows.append({"job_id": job_id, "status": state.get("status", "?"), "accepted": state.get("accepted", 0),
                     "test_accuracy": state.get("test_accuracy"), "created": state.get("created", 0)})
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'JOB':<26}{'STATUS':<11}{'PUSHES':>8}{'ACCURACY':>10}  CREATED")
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        click.echo(f"{r['job_id']:<26}{r['status']:<11}{r['accepted']:>8}{acc:>10}  "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r['created']))}")


@click.command()
@click.argument("job_id")
@redis_url_option
@click.pass_obj
def cancel(settings, job_id, redis_url):
    """Cancel a job: workers skip its remaining subsets; staged data is freed."""
    _, client = connect_for(settings, redis_url)
    store = open_job(client, job_id)
    if not store.cancel():  # one compare-and-set: a job that ended meanwhile stays as it ended
        click.echo(f"job {job_id} already {store.status()}")
        return
    store.log("cancelled")
    # In-flight pushes are refused from now on ('closed'); tasks still reading the data
    # stop without touching the job's status.
    store.drop_staged_data()
    click.echo(f"job {job_id} cancelled")


@click.command()
@redis_url_option
@click.option("--delete-finished", is_flag=True, help="Also delete finished jobs entirely (results included).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def gc(settings, redis_url, delete_finished, as_json):
    """Free Redis memory that ended jobs left behind (staged data, wave bookkeeping, orphan keys)."""
    settings, client = connect_for(settings, redis_url)
    from bpt.broker.weight_shards import open_shards

    shards = open_shards(settings.weights_url, settings.connect_timeout, settings.socket_timeout)
    try:
        report = collect_garbage(client, delete_finished, shards)
    finally:
        if shards is not None:
            shards.close()
    click.echo(json.dumps(report) if as_json else
               f"cleaned {report['finished_jobs_cleaned']} finished jobs, deleted {report['jobs_deleted']} jobs "
               f"and {report['orphan_keys']} orphan keys")


@click.command()
@redis_url_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def workers(settings, redis_url, as_json):
    """List the workers that have trained or beaten their heartbeat on this Redis server."""
    from bpt.broker.clock import now as server_now
    from bpt.broker.worker_registry import is_alive, workers as registered

    settings, client = connect_for(settings, redis_url)
    now = server_now(client)  # heartbeats are stamped with Redis's clock
    rows = [{"worker": name, **w, "state": "alive" if is_alive(w, now, settings.heartbeat_timeout) else "dead"}
            for name, w in registered(client).items()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'WORKER':<28}{'HOST':<14}{'ADDRESS':<16}{'STATE':<7}{'DEVICE':<10}{'SAMPLES/S':>10}{'TASKS':>7}  "
               "LAST HEARTBEAT  PLUG-INS")
    for r in rows:
        rate = f"{r['rate']:.0f}" if r["rate"] else "-"
        plugins = ", ".join(f"{k}=={v}" for k, v in sorted(r["plugins"].items())) or "-"
        click.echo(f"{r['worker']:<28}{r['host']:<14}{r['address']:<16}{r['state']:<7}{r['device'].split(' ')[0]:<10}{rate:>10}"
                   f"{r['tasks']:>7}  {now - r['heartbeat']:>5.1f}s ago     {plugins}")
