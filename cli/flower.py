"""`bpt flower`: Celery's Flower dashboard for a bpt Redis server, safe by default."""

from __future__ import annotations

import os
import sys

import click

from bpt.errors import ConfigError
from bpt.broker.connection import connect, redact


def flower_argv(redis_url: str, address: str, port: int, auth: str | None) -> tuple[list[str], dict]:
    """The command line and extra environment that start Flower for this broker."""
    argv = [sys.executable, "-m", "celery", f"--broker={redis_url}", "flower", f"--address={address}",
            f"--port={port}"]
    env = {}
    if auth:
        if ":" not in auth:
            raise ConfigError("BPT_FLOWER_AUTH must be USER:PASSWORD (several separated by commas)")
        argv.append(f"--basic-auth={auth}")
    else:
        # Flower 2 answers 401 on /api/* unless auth is configured or this is set; without
        # auth we only bind to loopback unless told otherwise (see --address).
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    return argv, env


@click.command()
@click.option("--redis-url", envvar="BPT_REDIS_URL", default=None, help="The broker (or BPT_REDIS_URL).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 needs auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--auth", envvar="BPT_FLOWER_AUTH", default=None, help="Basic auth USER:PASSWORD (or BPT_FLOWER_AUTH).")
@click.pass_obj
def flower(settings, redis_url, address, port, auth):
    """Start Flower to watch workers and tasks in a browser (tasks are named bpt.*, first
    argument the job id). Its HTTP API is at /api/ with the same credentials."""
    settings = settings.override(redis_url=redis_url)
    if settings.redis_url is None:
        raise ConfigError("bpt flower needs --redis-url or BPT_REDIS_URL")
    if address not in ("127.0.0.1", "localhost", "::1") and not auth:
        raise ConfigError(f"refusing to serve Flower on {address} without auth: set BPT_FLOWER_AUTH=user:password")
    connect(settings.redis_url, settings.connect_timeout).close()
    argv, env = flower_argv(settings.redis_url, address, port, auth)
    how = "with basic auth" if auth else "without auth (loopback only)"
    click.echo(f"Flower for {redact(settings.redis_url)} at http://{address}:{port}/ {how}; API at /api/workers",
               err=True)
    os.execve(argv[0], argv, {**os.environ, **env})
