"""LocalWorkers' readiness wait on a real Redis and real worker processes."""

import threading
import time

import pytest
import redis

from bpt.broker.redis_server import PrivateRedis
from bpt.settings import Settings
from bpt.workers.launcher import LocalWorkers

pytestmark = pytest.mark.slow


def test_the_readiness_wait_rides_out_its_pings_connections_being_closed():
    """CI once saw Redis close the connection of a readiness ping while the workers started
    (`Connection closed by server`, raised out of LocalWorkers): the wait polls again, as it
    does for a worker not yet up. Here every client connection is killed for the first 3 s."""
    with PrivateRedis() as server:
        settings = Settings(redis_url=server.url, workers=1, poll_seconds=0.05)
        local = LocalWorkers(settings, 1)
        killer = redis.Redis.from_url(server.url)
        stop, kills = threading.Event(), []

        def kill_connections():
            until = time.monotonic() + 3.0
            while time.monotonic() < until and not stop.is_set():
                kills.append(killer.execute_command("CLIENT", "KILL", "SKIPME", "yes"))
                time.sleep(0.05)

        thread = threading.Thread(target=kill_connections, daemon=True)
        try:
            local.spawn()
            thread.start()
            local.wait_ready(60)
        finally:
            stop.set()
            thread.join()
            local.stop()
            killer.close()
        assert sum(kills) > 0  # connections were killed while it waited
