"""`bpt pause`, `bpt resume`, `bpt logs`: steer a running job and read what happened."""

from __future__ import annotations

import json
import time

import click

from bpt.errors import ConfigError

from .jobs import connect_for, open_job, redis_url_option


@click.command()
@click.argument("job_id")
@redis_url_option
@click.pass_obj
def pause(settings, job_id, redis_url):
    """Pause a job: running subsets finish and are merged, the rest wait; nothing is lost."""
    _, client = connect_for(settings, redis_url)
    store = open_job(client, job_id)
    moved = store.move("pause")  # one compare-and-set: a job finishing meanwhile is not paused
    if not moved.ok:
        raise ConfigError(f"job {job_id} is already {moved.previous}; only a queued or running job can be paused")
    store.log("paused")
    click.echo(f"job {job_id} paused; `bpt resume {job_id}` continues it")


@click.command()
@click.argument("job_id")
@redis_url_option
@click.pass_obj
def resume(settings, job_id, redis_url):
    """Resume a paused job."""
    _, client = connect_for(settings, redis_url)
    store = open_job(client, job_id)
    moved = store.move("resume")
    if not moved.ok:
        raise ConfigError(f"job {job_id} is {moved.previous}, not paused")
    store.log("resumed")
    click.echo(f"job {job_id} resumed")


@click.command()
@click.argument("job_id")
@redis_url_option
@click.option("--last", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="How many events.")
@click.option("--event", "kinds", multiple=True, help="Only these events (e.g. push-rejected, evaluated); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def logs(settings, job_id, redis_url, last, kinds, as_json):
    """Show a job's events: submissions, pushes accepted, rejected or invalid, rounds merged,
    evaluations, pauses, failures."""
    _, client = connect_for(settings, redis_url)
    events = open_job(client, job_id).events()
    if kinds:
        events = [e for e in events if e["event"] in kinds]
    shown = events[-last:]
    if len(events) > last >= 2 and not kinds and events[0]["event"] == "submitted":  # what the job is, always
        shown = events[:1] + shown[1:]
        if not as_json:
            click.echo(f"(showing the submitted event and the last {last - 1} of {len(events)}; --last N shows more)")
    for event in shown:
        if as_json:
            click.echo(json.dumps(event))
            continue
        stamp = time.strftime("%H:%M:%S", time.localtime(event.pop("time")))
        name = event.pop("event")
        detail = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.items())
        click.echo(f"{stamp} {name:<15} {detail}")
