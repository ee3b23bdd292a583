"""bpt's RabbitMQ queues against a real RabbitMQ: the delivery limit and its dead letters,
and a clear error for a broker that cannot be reached. (The end-to-end and fault suites run
whole jobs on RabbitMQ too: their `broker` fixture.)"""

import os
import subprocess
import sys
import time
import uuid

import pytest
from kombu import Connection

from bpt.settings import Settings
from bpt.errors import ConfigError
from bpt.workers.app import (DEAD_LETTER_QUEUE, QUEUE_DELIVERY_LIMIT, TRAIN_QUEUE, dead_letter_queue, make_app,
                             quorum_queue)
from bpt.workers import queues


def test_a_task_returned_past_its_delivery_limit_is_dead_lettered_not_redelivered(rabbitmq_url):
    limit = 3
    name = "bpt.test-" + uuid.uuid4().hex[:8]
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        dead = dead_letter_queue()(channel)
        dead.declare()
        dead.purge()
        queue = quorum_queue(name, limit)(channel)
        queue.declare()
        try:
            conn.Producer(channel).publish({"poison": True}, exchange=queue.exchange, routing_key=name,
                                           serializer="json", declare=[queue])
            deliveries, deadline = 0, time.monotonic() + 10
            while time.monotonic() < deadline and deliveries <= 20:
                message = queue.get(no_ack=False)
                if message is None:  # not enqueued yet (a quorum queue commits through Raft), or dead-lettered
                    if deliveries > limit:
                        break
                    time.sleep(0.05)
                    continue
                deliveries += 1
                message.reject(requeue=True)  # what Celery does when the task's process died
            assert deliveries == limit + 1  # the first delivery and `limit` returns
            for _ in range(100):
                dead_message = dead.get(no_ack=False)
                if dead_message is not None:
                    break
                time.sleep(0.05)
            assert dead_message is not None and dead_message.payload == {"poison": True}
            dead_message.ack()
        finally:
            queue.delete()


def test_on_rabbitmq_the_queues_are_quorum_queues_with_a_delivery_limit_and_publishes_are_confirmed(rabbitmq_url):
    settings = Settings(redis_url="redis://127.0.0.1:1/0", broker_url=rabbitmq_url, max_deliveries=5)
    with pytest.raises(ConfigError, match="below RabbitMQ's delivery limit of 10"):
        make_app(Settings(redis_url="redis://127.0.0.1:1/0", broker_url=rabbitmq_url, max_deliveries=10))
    app = make_app(settings)
    try:
        train = next(q for q in app.conf.task_queues if q.name == TRAIN_QUEUE)
        assert train.queue_arguments["x-queue-type"] == "quorum"
        assert train.queue_arguments["x-delivery-limit"] == QUEUE_DELIVERY_LIMIT > settings.max_deliveries
        assert train.queue_arguments["x-dead-letter-exchange"] == DEAD_LETTER_QUEUE
        assert app.conf.broker_transport_options["confirm_publish"] is True
        missing = app.amqp.queues["bpt.w.someone@host"]  # a worker's own queue, made on demand
        assert missing.queue_arguments == train.queue_arguments
        queues.declare_dead_letters(app)
        assert queues.depth(app, DEAD_LETTER_QUEUE) >= 0
        assert queues.depth(app, "bpt.no-such-queue") == 0
    finally:
        app.close()


def test_a_worker_whose_broker_cannot_be_reached_says_so_in_one_line(redis_url):
    # the URL with its password in the variable, as docs/deployment.md says (a flag would add a warning line)
    done = subprocess.run([sys.executable, "-m", "bpt.cli", "worker", "--redis-url", redis_url], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "BPT_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the broker at amqp://guest:***@127.0.0.1:1//" in lines[0], done.stderr


def test_a_broker_url_of_another_kind_is_refused():
    with pytest.raises(ConfigError, match="broker url must start with amqp://"):
        Settings(broker_url="kafka://127.0.0.1:9092").validate()


def test_a_worker_finding_bpts_queue_declared_otherwise_says_which_in_one_line(fresh_rabbitmq_url, redis_url):
    """An older bpt (or another tool) declared bpt.train with other arguments: RabbitMQ
    refuses the redeclare, and the worker said so only in a traceback."""
    with Connection(fresh_rabbitmq_url) as conn:
        old = quorum_queue(TRAIN_QUEUE, 3)(conn.channel())
        old.declare()
    done = subprocess.run([sys.executable, "-m", "bpt.cli", "worker", "--redis-url", redis_url], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "BPT_BROKER_URL": fresh_rabbitmq_url})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "RabbitMQ has queue bpt.train with other arguments" in lines[0] and "x-delivery-limit" in lines[0]
