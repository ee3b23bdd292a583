"""`bpt flower`: Celery's Flower dashboard for a bpt Redis server, safe by default."""

from __future__ import annotations

import os
import secrets
import sys

import click

from bpt.errors import ConfigError
from bpt.broker.connection import connect, redact

from .options import broker_url_option


def flower_argv(redis_url: str, address: str, port: int, auth: str) -> tuple[list[str], dict]:
    """The command line and extra environment that start Flower for this broker. Secrets (the
    broker URL with its password, the basic-auth credentials) go in the environment, which
    only the process's owner can read, never on the command line, which `ps` shows to all."""
    if ":" not in auth:
        raise ConfigError("BPT_FLOWER_AUTH must be USER:PASSWORD (several separated by commas)")
    argv = [sys.executable, "-m", "celery", "flower", f"--address={address}", f"--port={port}",
            f"--tasks_columns={TASK_COLUMNS}"]
    return argv, {"CELERY_BROKER_URL": redis_url, "FLOWER_BASIC_AUTH": auth}


# A task row shows its kwargs (job_id, epoch, and the subset or range: the piece) and its
# result (push status, version, staleness, loss, accuracy), which task-succeeded events
# carry although bpt stores no results. Search one job on /tasks with kwargs:job_id=JOB.
TASK_COLUMNS = "name,uuid,state,kwargs,result,received,runtime,worker"


def generated_auth() -> str:
    """Credentials for a Flower started without any: Flower's API can send tasks and shut
    workers down, so it never runs open, not even on loopback (any web page in a browser on
    this machine could post to it)."""
    return "admin:" + secrets.token_urlsafe(12)


@click.command()
@click.option("--redis-url", envvar="BPT_REDIS_URL", default=None, help="The broker (or BPT_REDIS_URL).")
@broker_url_option
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 needs auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--auth", envvar="BPT_FLOWER_AUTH", default=None,
              help="Basic auth USER:PASSWORD (or BPT_FLOWER_AUTH; prefer the variable: flags show in `ps`). "
                   "Without it a random password is made and printed once.")
@click.pass_obj
def flower(settings, redis_url, broker_url, address, port, auth):
    """Start Flower to watch workers and tasks in a browser (tasks are named bpt.*, first
    argument the job id). Its HTTP API is at /api/ with the same credentials."""
    settings = settings.override(redis_url=redis_url, broker_url=broker_url)
    if settings.broker is None:
        raise ConfigError("bpt flower needs --redis-url or BPT_REDIS_URL (or the broker's --broker-url)")
    if address not in ("127.0.0.1", "localhost", "::1") and not auth:
        raise ConfigError(f"refusing to serve Flower on {address} without auth: set BPT_FLOWER_AUTH=user:password")
    if settings.uses_rabbitmq:
        from bpt.workers.queues import check_broker

        check_broker(settings)
    else:
        connect(settings.broker, settings.connect_timeout).close()
    generated = auth is None
    auth = generated_auth() if generated else auth
    argv, env = flower_argv(settings.broker, address, port, auth)
    how = f"user admin, password {auth.split(':', 1)[1]} (made for this run: set BPT_FLOWER_AUTH to choose)" \
        if generated else "with basic auth from BPT_FLOWER_AUTH"
    click.echo(f"Flower for {redact(settings.broker)} at http://{address}:{port}/, {how}; API at /api/workers",
               err=True)
    os.execve(argv[0], argv, {**os.environ, **env})
