"""Looking at and emptying Celery queues through the broker, Redis or RabbitMQ alike.

kombu's channel API (passive declare, purge) works on both transports, so the scheduler and
the watchdog never read the broker's own data structures (a Redis list is not a RabbitMQ
queue). A queue that does not exist is empty.
"""

from __future__ import annotations

from celery import Celery
from kombu.exceptions import ChannelError, OperationalError
from amqp.exceptions import NotFound, PreconditionFailed

from bpt.errors import ConfigError, ConnectionFailed
from bpt.settings import Settings
from bpt.broker.connection import redact

from .app import dead_letter_queue, make_app


def check_broker(settings: Settings) -> None:
    """Fail now, with the broker named, if it cannot be reached (a worker would otherwise
    retry its connection forever in the background)."""
    app = make_app(settings)
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=settings.connect_timeout)
            if conn.transport.driver_type == "amqp":
                _declare_bpt_queues(app, conn)
    except (ConfigError, ConnectionFailed):
        raise
    except Exception as e:  # kombu wraps socket, auth and protocol errors alike
        raise ConnectionFailed(f"cannot reach the broker at {redact(settings.broker)}: {e}") from e
    finally:
        app.close()


def declare_own_queue(app: Celery, name: str) -> None:
    """RabbitMQ: declare a worker's own queue as this bpt makes it (see _declare_bpt_queues)."""
    with app.connection_for_write() as conn:
        if conn.transport.driver_type == "amqp":
            _declare(conn, app.amqp.queues[name])


def _declare(conn, queue) -> None:
    channel = conn.channel()
    try:
        queue(channel).declare()
    except PreconditionFailed as e:
        raise ConfigError(f"RabbitMQ has queue {queue.name} with other arguments ({e.reply_text}): delete it "
                          f"(rabbitmqctl delete_queue {queue.name}) or give bpt a vhost of its own") from None
    finally:
        _close(channel)


def _declare_bpt_queues(app: Celery, conn) -> None:
    """Declare bpt's shared queues as this version of bpt makes them: a queue an older
    version (or another tool) declared with other arguments is refused by RabbitMQ, and the
    worker would die at start with a traceback."""
    for queue in list(app.conf.task_queues) + [dead_letter_queue()]:
        _declare(conn, queue)


def depth(app: Celery, name: str) -> int:
    """Messages ready on queue `name` (not those delivered and unacknowledged)."""
    with app.pool.acquire(block=True) as conn:
        channel = conn.channel()  # its own: a failed passive declare closes an AMQP channel
        try:
            return channel.queue_declare(queue=name, passive=True).message_count
        except (ChannelError, NotFound):
            return 0
        finally:
            _close(channel)


def purge(app: Celery, name: str) -> int:
    """Drop every ready message on queue `name`; returns how many."""
    with app.pool.acquire(block=True) as conn:
        channel = conn.channel()
        try:
            return channel.queue_purge(name) or 0
        except (ChannelError, NotFound):
            return 0
        finally:
            _close(channel)


def declare_dead_letters(app: Celery) -> None:
    """RabbitMQ: the queue that tasks past their delivery limit go to (without it they
    would be dropped unseen). Nothing to do on Redis, which has no delivery limit."""
    with app.connection_for_write() as conn:
        if conn.transport.driver_type == "amqp":
            dead_letter_queue()(conn.default_channel).declare()


def _close(channel) -> None:
    try:
        channel.close()
    except (OperationalError, OSError, NotFound, ChannelError):
        pass
