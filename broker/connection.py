"""Connecting to Redis with errors a user can act on."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from bpt.errors import ConnectionFailed
from bpt.settings import DEFAULT_SOCKET_TIMEOUT

HEALTH_CHECK_SECONDS = 30  # a connection idle this long is PINGed before it is used again


def redact(url: str) -> str:
    """The URL with any password replaced by '***' and without its query (TLS file paths),
    for messages and logs."""
    parts = urlsplit(url)._replace(query="")
    if parts.password is None:
        return urlunsplit(parts)
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, timeout: float = 3.0, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT) -> redis.Redis:
    """A client for url, checked with PING; binary responses (blobs stay bytes).

    Every call has a deadline (socket_timeout) and TCP keep-alive, and an idle connection
    is checked before reuse: a half-open connection (Redis's machine gone without a FIN)
    raises TimeoutError, which the tasks treat as an outage, instead of hanging."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=socket_timeout,
                                      socket_keepalive=True, health_check_interval=HEALTH_CHECK_SECONDS)
        client.ping()
    except redis.AuthenticationError as e:
        raise ConnectionFailed(f"Redis at {redact(url)} refused the credentials: {e}") from e
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise ConnectionFailed(f"Redis at {redact(url)} refused the credentials: {e}") from e
        raise ConnectionFailed(f"Redis at {redact(url)} answered with an error: {e}") from e
    except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError) as e:
        raise ConnectionFailed(f"cannot reach Redis at {redact(url)}: {e}") from e
    return client
