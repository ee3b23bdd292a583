"""`bpt exporter`: Prometheus metrics of the jobs and workers on a Redis server."""

from __future__ import annotations

import threading

import click

from bpt.errors import ConfigError

from .jobs import connect_for, redis_url_option
from .options import broker_url_option


@click.command()
@redis_url_option
@broker_url_option
@click.option("--port", type=click.IntRange(1, 65535), default=9464, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.pass_obj
def exporter(settings, redis_url, broker_url, port, address):
    """Serve Prometheus metrics (versions, pushes by outcome, staleness, worker throughput, queue depth)."""
    from prometheus_client import start_http_server
    from prometheus_client.core import CollectorRegistry

    from bpt.broker.prometheus import BptCollector
    from bpt.workers.app import CONTROL_QUEUE, DEAD_LETTER_QUEUE, TRAIN_QUEUE, make_app
    from bpt.workers import queues

    settings, client = connect_for(settings.override(broker_url=broker_url), redis_url)
    app = make_app(settings)
    registry = CollectorRegistry()
    watched = (TRAIN_QUEUE, CONTROL_QUEUE) + ((DEAD_LETTER_QUEUE,) if settings.uses_rabbitmq else ())
    registry.register(BptCollector(client, settings.heartbeat_timeout, watched, lambda q: queues.depth(app, q)))
    try:
        server, _ = start_http_server(port, addr=address, registry=registry)
    except OSError as e:
        raise ConfigError(f"cannot listen on {address}:{port}: {e.strerror}") from e
    click.echo(f"serving Prometheus metrics on http://{address}:{port}/metrics (Ctrl-C stops)", err=True)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
