"""Real servers for the tests, started once per session.

Redis: BPT_TEST_REDIS_URL if set, else a private redis-server on a free loopback port.
Workers: real Celery worker processes started by the same launcher `bpt train` uses.
Tests never flush the server: each one uses its own job ids.
"""

from __future__ import annotations

import os
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
