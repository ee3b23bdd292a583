"""Options several commands share."""

from __future__ import annotations

import click

broker_url_option = click.option(
    "--broker-url", envvar="BPT_BROKER_URL", default=None,
    help="Celery's broker, when it is not the Redis server: amqp://USER:PASSWORD@HOST:5672/VHOST for "
         "RabbitMQ (or BPT_BROKER_URL). Weights and job state stay in Redis.")
