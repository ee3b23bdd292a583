"""Real servers for the tests, started once per session.

Redis: BPT_TEST_REDIS_URL if set, else a private redis-server on a free loopback port.
RabbitMQ: BPT_TEST_AMQP_URL if set, else the one on 127.0.0.1:5672 (guest/guest), in a
virtual host of this session's own (made with rabbitmqctl where it can be, so two sessions
on one broker never take each other's tasks); tests that need it skip, saying so, without it.
Workers: real Celery worker processes started by the same launcher `bpt train` uses.
Tests never flush the server: each one uses its own job ids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.redis_server import PrivateRedis


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("BPT_TEST_REDIS_URL")
    if url:
        yield url
        return
    with PrivateRedis() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_cluster_url():
    """A real 3-primary Redis Cluster on free loopback ports, for sharded weights. Skipped
    only without redis-cli (which joins the nodes); a cluster that fails to start fails."""
    from bpt.broker.redis_server import PrivateCluster

    if shutil.which("redis-cli") is None:
        pytest.skip("no redis-cli to join a local Redis Cluster (Debian's redis-tools)")
    cluster = PrivateCluster(3).start()
    yield cluster.url
    cluster.stop()


@pytest.fixture
def client(redis_url):
    c = connect(redis_url)
    yield c
    c.close()


@pytest.fixture
def job_id():
    return "test-" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def settings(redis_url):
    return Settings(redis_url=redis_url, workers=2, threads=1, poll_seconds=0.05)


@pytest.fixture(scope="session")
def workers(settings):
    from bpt.workers.launcher import LocalWorkers

    with LocalWorkers(settings, 2) as local:
        yield local


@pytest.fixture(scope="session")
def app(settings):
    from bpt.workers.app import make_app

    app = make_app(settings)
    yield app
    app.close()


RABBITMQ = ("127.0.0.1", 5672)
BROKERS = ["redis", "rabbitmq"]  # the end-to-end and fault suites run on each


def _rabbitmqctl(*args) -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        return subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def rabbitmq_url():
    url = os.environ.get("BPT_TEST_AMQP_URL")
    if url:
        yield url
        return
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        pytest.skip(f"no RabbitMQ on {RABBITMQ[0]}:{RABBITMQ[1]}: the RabbitMQ runs of the end-to-end and fault "
                    "suites are skipped (CI machines have one)")
    with _own_vhost() as vhost:
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost or ''}"


@contextlib.contextmanager
def _own_vhost():
    """A new RabbitMQ virtual host for guest, deleted after; None where rabbitmqctl cannot."""
    vhost = "bpt-test-" + uuid.uuid4().hex[:8]
    own = _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield vhost if own else None
    finally:
        if own:
            _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def fresh_rabbitmq_url(rabbitmq_url):
    """A RabbitMQ URL on a virtual host of this test's own (nothing declared in it yet)."""
    with _own_vhost() as vhost:
        if vhost is None:
            pytest.skip("needs rabbitmqctl to make a virtual host")
        yield rabbitmq_url.rsplit("/", 1)[0] + "/" + vhost


@pytest.fixture(scope="module", params=BROKERS)
def broker(request):
    """None for Celery on the Redis server (the default), or a RabbitMQ URL."""
    return request.getfixturevalue("rabbitmq_url") if request.param == "rabbitmq" else None
