"""LocalWorkers' readiness wait: how it treats a ping that fails. The ping is replaced here
(the wait's polling is the logic under test); the real start of real workers is every
other worker test's fixture."""

import pytest
import redis

from bpt.errors import BptError
from bpt.settings import Settings
from bpt.workers import launcher


class Pings:
    """app.control.ping: raises each of `errors` in turn, then answers for `names`."""

    def __init__(self, errors, names):
        self.errors, self.names, self.calls = list(errors), names, 0
        self.control = self

    def ping(self, timeout):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return [{name: {"ok": "pong"}} for name in self.names]

    def close(self):
        pass


def waiting(monkeypatch, pings) -> launcher.LocalWorkers:
    monkeypatch.setattr(launcher, "make_app", lambda settings: pings)
    local = launcher.LocalWorkers(Settings(), 1, log_dir="/tmp")
    local.names = pings.names
    return local


def test_the_readiness_wait_rides_out_a_dropped_ping_connection(monkeypatch):
    """CI once saw Redis close a readiness ping's connection while the workers started
    (`Connection closed by server`, raised out of LocalWorkers and failing the test that
    started them): the wait polls again, as it does for a worker not yet up."""
    pings = Pings([redis.ConnectionError("Connection closed by server."), OSError("reset")], ["w@host"])
    waiting(monkeypatch, pings).wait_ready(10)
    assert pings.calls == 3


def test_a_server_that_stays_gone_fails_the_wait_with_the_last_error(monkeypatch):
    pings = Pings([redis.ConnectionError("Connection refused")] * 100, ["w@host"])
    with pytest.raises(BptError, match="Connection refused"):
        waiting(monkeypatch, pings).wait_ready(0.5)


def test_a_wrong_password_is_raised_at_once(monkeypatch):
    pings = Pings([redis.AuthenticationError("invalid password")], ["w@host"])
    with pytest.raises(redis.AuthenticationError):
        waiting(monkeypatch, pings).wait_ready(10)
    assert pings.calls == 1
