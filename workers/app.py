"""The Celery app, built from Settings (never at import time).

JSON only, late acknowledgement with requeue when a worker process dies, one task
prefetched at a time. On Redis (the default broker) a visibility timeout far above the
longest task; on RabbitMQ (`amqp://`) quorum queues with a delivery limit and a dead-letter
queue, and publisher confirms (docs/design.md, "Broker").
"""

from __future__ import annotations

import math
import ssl

from celery import Celery
from celery.app.amqp import AMQP, Queues
from kombu import Exchange, Queue

from bpt.errors import ConfigError
from bpt.settings import Settings

TRAIN_QUEUE = "bpt.train"
TRAIN_TASK = "bpt.train_subset"
RANGE_TASK = "bpt.train_range"
SCHEDULE_TASK = "bpt.schedule"
FINISH_TASK = "bpt.finish"  # takes over finishing a job whose finisher died (workers/watchdog.py)
CONTROL_QUEUE = "bpt.control"


def worker_queue(name: str) -> str:
    """Each worker's own queue, where the scheduler routes its ranges."""
    return f"bpt.w.{name}"

RESTORE_SWEEP_SECONDS = 10
# Where RabbitMQ puts a task returned more than the delivery limit (its process died each
# time): the job fails at the delivery before (workers/subnetwork.py), so this queue only
# holds what slipped past that, for an operator to read (`bpt exporter` shows its depth).
DEAD_LETTER_QUEUE = "bpt.dead"
# RabbitMQ returns a task at most this often before dead-lettering it. One fixed value for
# every process: a queue redeclared with other arguments is refused, so it cannot follow
# each process's BPT_MAX_DELIVERIES; bpt's own count fails the job first (max_deliveries,
# which must stay below this), RabbitMQ's limit is the backstop for what gets past it.
QUEUE_DELIVERY_LIMIT = 10


def quorum_queue(name: str, delivery_limit: int) -> Queue:
    """A RabbitMQ quorum queue for bpt's tasks: replicated, durable, and it returns a task at
    most delivery_limit times before dead-lettering it. Its own topic exchange (routing key =
    its name), as Celery's native delayed delivery needs for countdowns on quorum queues."""
    return Queue(name, Exchange(name, type="topic", durable=True), routing_key=name, durable=True,
                 queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": delivery_limit,
                                  "x-dead-letter-exchange": DEAD_LETTER_QUEUE,
                                  "x-dead-letter-routing-key": DEAD_LETTER_QUEUE})


def _quorum_amqp(delivery_limit: int) -> type:
    """Celery's AMQP class with every queue it makes on demand (each worker's own queue,
    named by the scheduler) declared as quorum_queue, so that sender and consumer declare
    it with the same arguments (RabbitMQ refuses a queue redeclared with others)."""

    class QuorumQueues(Queues):
        def new_missing(self, name):
            return quorum_queue(name, delivery_limit)

    return type("QuorumAMQP", (AMQP,), {"queues_cls": QuorumQueues})


def make_app(settings: Settings) -> Celery:
    rabbit = settings.uses_rabbitmq
    broker, tls = _split_tls(settings.broker)
    if rabbit and settings.max_deliveries >= QUEUE_DELIVERY_LIMIT:
        raise ConfigError(f"max_deliveries must be below RabbitMQ's delivery limit of {QUEUE_DELIVERY_LIMIT} for "
                          f"bpt's queues, got {settings.max_deliveries}")
    app = Celery("bpt", broker=broker, set_as_current=False,
                 amqp=_quorum_amqp(QUEUE_DELIVERY_LIMIT) if rabbit else None)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=TRAIN_QUEUE,
        task_ignore_result=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # A task whose whole worker died is restored visibility_timeout after delivery, found
        # by a sweep every RESTORE_SWEEP_SECONDS, or every visibility timeout if shorter
        # (kombu's default sweep is every 100 s).
        # Deadlines and keep-alive on the broker's connections too (a publish on a half-open
        # connection would wait forever); kombu checks its BRPOP connection every
        # health_check_interval seconds.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  "unacked_restore_interval": min(RESTORE_SWEEP_SECONDS,
                                                                  max(1, settings.visibility_timeout)),
                                  "unacked_restore_throttle": 1,
                                  "socket_timeout": settings.socket_timeout,
                                  "socket_connect_timeout": settings.connect_timeout,
                                  "socket_keepalive": True,
                                  "health_check_interval": 25},
    )
    if rabbit:
        _use_quorum_queues(app, QUEUE_DELIVERY_LIMIT)
    elif broker.startswith("rediss://"):
        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED, **tls}
    return app


TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _split_tls(url: str) -> tuple[str, dict]:
    """A rediss:// URL's TLS files (query parameters, for redis-py) moved to the dict that
    kombu's broker_use_ssl takes; the URL without them and ssl_cert_reqs."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    if not url.startswith("rediss://"):
        return url, {}
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    tls = {k: query.pop(k) for k in TLS_FILES if k in query}
    query.pop("ssl_cert_reqs", None)
    return urlunsplit(parts._replace(query=urlencode(query))), tls


def _use_quorum_queues(app: Celery, delivery_limit: int) -> None:
    """RabbitMQ: a dead worker's unacknowledged task is back on its queue as soon as its
    connection closes (no visibility timeout); each return counts towards the queue's
    delivery limit; a publish returns only once the broker has it (publisher confirms)."""
    app.conf.update(
        task_queues=[quorum_queue(TRAIN_QUEUE, delivery_limit), quorum_queue(CONTROL_QUEUE, delivery_limit)],
        task_default_exchange=TRAIN_QUEUE,
        task_default_exchange_type="topic",
        task_default_routing_key=TRAIN_QUEUE,
        task_default_queue_type="quorum",
        task_create_missing_queue_type="quorum",
        task_create_missing_queue_exchange_type="topic",
        broker_transport_options={"confirm_publish": True},
        broker_heartbeat=30,
    )


def on_rabbitmq(app: Celery) -> bool:
    return app.conf.task_default_queue_type == "quorum"


def countdown(app: Celery, seconds: float) -> float:
    """A task countdown the broker can keep: on RabbitMQ, Celery's native delayed delivery
    for quorum queues takes whole seconds of at least 1 (a countdown of 0.5 raised
    "countdown must be a positive number" and the scheduler's chain broke at every tick)."""
    return float(max(1, math.ceil(seconds))) if on_rabbitmq(app) else seconds


def dead_letter_queue() -> Queue:
    return Queue(DEAD_LETTER_QUEUE, Exchange(DEAD_LETTER_QUEUE, type="direct", durable=True),
                 routing_key=DEAD_LETTER_QUEUE, durable=True, queue_arguments={"x-queue-type": "quorum"})
