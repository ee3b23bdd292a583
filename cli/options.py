"""Options several commands share."""

from __future__ import annotations

import click

broker_url_option = click.option(
    "--broker-url", envvar="BPT_BROKER_URL", default=None,
    help="Celery's broker, when it is not the Redis server: amqp://USER:PASSWORD@HOST:5672/VHOST for "
         "RabbitMQ (or BPT_BROKER_URL). Weights and job state stay in Redis.")

weights_url_option = click.option(
    "--weights-url", envvar="BPT_WEIGHTS_URL", default=None,
    help="Keep the weights' bytes sharded on this Redis Cluster (redis://HOST:PORT of any node; or "
         "BPT_WEIGHTS_URL); the job's Redis keeps their manifest. Every worker needs the same.")


def tls_options(command):
    """--redis-ca, --redis-cert, --redis-key (or BPT_REDIS_CA, _CERT, _KEY) for a rediss:// URL."""
    for name, what in (("key", "this client's private key (with --redis-cert)"),
                       ("cert", "this client's certificate, where Redis asks for one"),
                       ("ca", "the CA certificate that signed Redis's own")):
        command = click.option(f"--redis-{name}", f"redis_{name}", envvar=f"BPT_REDIS_{name.upper()}", default=None,
                               help=f"rediss:// only: {what} (or BPT_REDIS_{name.upper()}).")(command)
    return command
