"""Fixtures the worker tests share."""

import pytest

from bpt.broker.keys import RECONCILER_LEASE


@pytest.fixture
def lease(client):
    """The reconciler lease, held by the test (the session's workers' reconcilers wait
    meanwhile); given back after it, unless it expired."""
    value = "999999:test"
    client.set(RECONCILER_LEASE, value, px=120_000)
    yield value
    if client.get(RECONCILER_LEASE) == value.encode():
        client.delete(RECONCILER_LEASE)
