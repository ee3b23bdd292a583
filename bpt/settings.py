"""One frozen settings object for a bpt process.

Defaults are named constants; `Settings.from_env()` reads `BPT_*` variables; CLI flags win
through `settings.override(...)`. The object is passed down explicitly, never read from a
global, so tests and workers can each build their own.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from bpt.errors import ConfigError

DEFAULT_THREADS = 1
DEFAULT_OUT_DIR = "bpt-runs"
# Celery's Redis transport redelivers a task not acknowledged within this many seconds. It
# must stay well above the longest training task (seconds), or a slow task runs twice (pushes
# are idempotent, so that only wastes work); it is also how long the subset of a worker whose
# whole machine died waits before another worker gets it.
DEFAULT_VISIBILITY_TIMEOUT = 600
# Staging data in Redis costs Redis memory; past this a job is refused (see docs/data.md).
DEFAULT_MAX_STAGED_MB = 256
DEFAULT_POLL_SECONDS = 0.2
# A worker silent for this long is dead to the scheduler: its ranges go to others.
DEFAULT_HEARTBEAT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 3.0
# A Redis call that gets no answer for this long fails (a half-open TCP connection used to
# hang a process forever). Above the longest call: a 180 MB pull at about 1 GB/s, and the
# merge lease's short blocking waits.
DEFAULT_SOCKET_TIMEOUT = 60.0
# A task delivered this many times without finishing (its process died each time: out of
# memory, a model too big) fails its job with the reason, instead of looping forever.
DEFAULT_MAX_DELIVERIES = 3


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Settings:
    redis_url: str | None = None  # None: start a private Redis server (embedded mode)
    # Celery's broker: None means the Redis above; amqp:// for RabbitMQ (quorum queues with a
    # delivery limit, publisher confirms; workers/app.py). Weights and job state stay in Redis.
    broker_url: str | None = None
    # Where the weights' bytes live when not in the job's Redis: a Redis Cluster (or another
    # Redis), sharded (broker/weight_shards.py); the job's Redis keeps the manifest.
    weights_url: str | None = None
    # TLS to a rediss:// Redis: the CA that signed its certificate, and this client's own
    # certificate and key where the server asks for one. Folded into redis_url's query
    # (ssl_ca_certs, ssl_certfile, ssl_keyfile), which redis-py reads, so every connection
    # any process makes from the URL (local workers' too) carries them.
    redis_ca: str | None = None
    redis_cert: str | None = None
    redis_key: str | None = None
    weights_shards: int = 0  # shards a version is split into; 0: one per primary of the cluster
    workers: int = dataclasses.field(default_factory=default_workers)
    threads: int = DEFAULT_THREADS  # threads per worker process for the inner layer
    inner: str | None = None  # inner-layer strategy for this worker; None: the job's choice
    out_dir: str = DEFAULT_OUT_DIR
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    max_staged_mb: int = DEFAULT_MAX_STAGED_MB
    poll_seconds: float = DEFAULT_POLL_SECONDS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    device: str = "auto"  # a worker's device: auto (CUDA when there is one), cpu, cuda, cuda:N (bpt.model.devices)
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU; or fp32, bf16

    ENV_PREFIX = "BPT_"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(cls.ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(field, raw)
        return cls(**values).validate()

    def override(self, **flags) -> "Settings":
        """Return a copy with the given flags applied; None means 'flag not given'."""
        given = {k: v for k, v in flags.items() if v is not None}
        return dataclasses.replace(self, **given).validate()

    def validate(self) -> "Settings":
        for name in ("workers", "threads", "visibility_timeout", "max_staged_mb", "max_deliveries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.inner is not None and self.inner not in ("auto", "torch", "tasks"):
            raise ConfigError(f"inner must be auto, torch or tasks, got {self.inner!r}")
        from bpt.model.device_names import PRECISIONS, check

        check(self.device)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.poll_seconds <= 0 or self.connect_timeout <= 0 or self.socket_timeout <= 0:
            raise ConfigError("poll_seconds, connect_timeout and socket_timeout must be positive")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"redis url must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )
        if self.weights_url is not None and not self.weights_url.startswith(("redis://", "rediss://")):
            raise ConfigError(f"weights url must start with redis:// or rediss://, got {self.weights_url!r}")
        if self.weights_shards < 0:
            raise ConfigError(f"weights_shards must be 0 (one per primary) or more, got {self.weights_shards}")
        if self.broker_url is not None and not self.broker_url.startswith(BROKER_SCHEMES):
            raise ConfigError(f"broker url must start with {', '.join(BROKER_SCHEMES)}, got {self.broker_url!r}")
        return self._with_tls()

    def _with_tls(self) -> "Settings":
        """A copy whose rediss:// URLs (Redis, and broker and weights where they are rediss://
        too) carry the TLS files; the same settings when none are given. Folding twice
        changes nothing."""
        files = {"ssl_ca_certs": self.redis_ca, "ssl_certfile": self.redis_cert, "ssl_keyfile": self.redis_key}
        given = {k: v for k, v in files.items() if v}
        if not given:
            return self
        if not (self.redis_url or "").startswith("rediss://"):
            raise ConfigError("--redis-ca, --redis-cert and --redis-key need a rediss:// Redis URL")
        if bool(self.redis_cert) != bool(self.redis_key):
            raise ConfigError("--redis-cert and --redis-key go together")
        query = {**given, "ssl_cert_reqs": "required"}

        def fold(url):
            return with_query(url, query) if url and url.startswith("rediss://") else url

        return dataclasses.replace(self, redis_url=fold(self.redis_url), broker_url=fold(self.broker_url),
                                   weights_url=fold(self.weights_url))

    @property
    def broker(self) -> str | None:
        """The URL Celery's tasks travel through: broker_url, else the Redis server."""
        return self.broker_url or self.redis_url

    @property
    def uses_rabbitmq(self) -> bool:
        return (self.broker or "").startswith(("amqp://", "amqps://"))


def with_query(url: str, values: dict[str, str]) -> str:
    """url with these query parameters set (others kept; setting twice changes nothing)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(values)
    return urlunsplit(parts._replace(query=urlencode(query)))


BROKER_SCHEMES = ("amqp://", "amqps://", "redis://", "rediss://", "unix://")


def _parse(field: dataclasses.Field, raw: str):
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"BPT_{field.name.upper()} must be a number, got {raw!r}") from None
    return raw
