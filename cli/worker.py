"""`bpt worker`: serve training tasks from a Redis server."""

from __future__ import annotations

import click

from bpt.errors import ConfigError
from bpt.broker.connection import connect

from .options import broker_url_option, tls_options, weights_url_option


@click.command()
@click.option("--redis-url", envvar="BPT_REDIS_URL", help="redis://[:PASSWORD@]HOST:PORT/DB (or BPT_REDIS_URL).")
@broker_url_option
@weights_url_option
@tls_options
@click.option("--name", default=None, help="Worker name, NAME@HOST (default bpt@<hostname>, or bpt-2@<hostname>, ... when a live "
                   "worker on this host has it).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training processes in this worker.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Inner-layer threads per training process (BPT_THREADS, default 1).")
@click.option("--inner", type=click.Choice(["auto", "torch", "tasks"]), default=None,
              help="Inner-layer strategy for this worker, overriding the job's (BPT_INNER).")
@click.option("--device", default=None,
              help="auto (a CUDA device when there is one), cpu, cuda or cuda:N (BPT_DEVICE, default auto).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="auto: bf16 autocast on CUDA, fp32 on the CPU (BPT_PRECISION). Weights stay float32.")
@click.option("--slowdown", type=click.FloatRange(min=1.0), default=1.0, show_default=True,
              help="Emulate a node F times slower: sleep (F-1) x the measured compute time after each subset.")
@click.option("--queues", "-Q", default="bpt.train", show_default=True,
              help="Comma-separated queues to consume (the training queue is bpt.train).")
@click.option("--loglevel", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.pass_obj
def worker(settings, redis_url, broker_url, weights_url, redis_ca, redis_cert, redis_key, name, concurrency, threads, inner, device, precision, slowdown, queues, loglevel):
    """Start a worker that trains subsets for any job on this Redis server.

    It needs the Redis URL; job specs, weights and staged data travel through Redis. A job
    with a plug-in model needs its package installed here, and one with an array directory
    needs that path readable here; a worker that lacks either declines the job's tasks.
    """
    from bpt.workers.worker import run_worker

    settings = settings.override(redis_url=redis_url, broker_url=broker_url, weights_url=weights_url, redis_ca=redis_ca,
                                 redis_cert=redis_cert, redis_key=redis_key, threads=threads, inner=inner, device=device, precision=precision)
    if settings.redis_url is None:
        raise ConfigError("bpt worker needs --redis-url or BPT_REDIS_URL")
    from bpt.model.devices import resolve

    resolve(settings.device)  # cuda on a machine without it: a clear error now, not at the first task
    connect(settings.redis_url, settings.connect_timeout).close()  # fail fast with a clear message
    from bpt.workers.queues import check_broker

    check_broker(settings)
    if settings.weights_url:
        from bpt.broker.weight_shards import open_shards

        open_shards(settings.weights_url, settings.connect_timeout, settings.socket_timeout).close()
    run_worker(settings, name, concurrency, loglevel.upper(), slowdown, queues)
