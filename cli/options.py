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
