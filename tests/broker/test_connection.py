"""Deadlines on Redis connections (issue 15, item 7): a server that stops answering (a
half-open TCP connection, a frozen machine) raises a timeout instead of hanging a process."""

import os
import signal
import socket
import threading
import time

import pytest
import redis

from bpt.errors import ConnectionFailed
from bpt.broker.connection import connect
from bpt.broker.redis_server import PrivateRedis


def test_a_server_that_accepts_and_never_answers_is_a_clear_error_within_the_deadline():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    began = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot reach Redis"):
        connect(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout=1.0, socket_timeout=1.0)
    assert time.monotonic() - began < 5
    listener.close()


def test_a_frozen_redis_makes_calls_time_out_not_hang():
    with PrivateRedis() as server:
        client = connect(server.url, socket_timeout=1.0)
        client.set("k", "v")
        os.kill(server.proc.pid, signal.SIGSTOP)  # the process stops answering; TCP stays open
        try:
            began = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                client.get("k")
            assert time.monotonic() - began < 5
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert client.get("k") == b"v"  # and the client recovers when it answers again
