"""Connecting to Redis with errors a user can act on."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis

from bpt.errors import ConnectionFailed


def redact(url: str) -> str:
    """The URL with any password replaced by '***', for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str, timeout: float = 3.0) -> redis.Redis:
    """A client for url, checked with PING; binary responses (blobs stay bytes)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=30)
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
