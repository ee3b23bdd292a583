"""Workers as the scheduler sees them: heartbeat, host, and an exponentially weighted
throughput measured from completed tasks (samples per second, overheads included)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import redis

WORKERS_INDEX = "bpt:workers"
EWMA = 0.5  # weight of the newest task

log = logging.getLogger(__name__)


def worker_key(name: str) -> str:
    return f"bpt:worker:{name}"


def heartbeat(client: redis.Redis, name: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.hset(worker_key(name), mapping={"heartbeat": time.time(), "host": socket.gethostname()})
    pipe.sadd(WORKERS_INDEX, name)
    pipe.execute()


def record_task(client: redis.Redis, name: str, samples: int, seconds: float) -> float:
    """Fold one task's throughput into the worker's EWMA; returns the new rate. Only the
    worker itself writes its entry, so a read-modify-write is safe enough."""
    observed = samples / max(seconds, 1e-6)
    old = client.hget(worker_key(name), "rate")
    rate = observed if old is None else EWMA * observed + (1 - EWMA) * float(old)
    pipe = client.pipeline(transaction=False)
    pipe.hset(worker_key(name), mapping={"rate": rate, "heartbeat": time.time()})
    pipe.hincrby(worker_key(name), "tasks", 1)
    pipe.hincrby(worker_key(name), "samples", samples)
    pipe.sadd(WORKERS_INDEX, name)
    pipe.execute()
    return rate


def workers(client: redis.Redis) -> dict[str, dict]:
    names = sorted(n.decode() for n in client.smembers(WORKERS_INDEX))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(worker_key(name))
    out = {}
    for name, raw in zip(names, pipe.execute()):
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        out[name] = {"host": fields.get("host", "?"), "heartbeat": float(fields.get("heartbeat", 0)),
                     "rate": float(fields["rate"]) if "rate" in fields else None,
                     "tasks": int(fields.get("tasks", 0)), "samples": int(fields.get("samples", 0))}
    return out


def forget(client: redis.Redis, name: str) -> None:
    client.srem(WORKERS_INDEX, name)
    client.delete(worker_key(name))


class HeartbeatThread(threading.Thread):
    """Beats every `interval` seconds from the worker's main process; stops with it."""

    def __init__(self, client: redis.Redis, name: str, interval: float = 1.0, on_beat=None):
        super().__init__(daemon=True, name="bpt-heartbeat")
        self.client, self.name_, self.interval, self.on_beat = client, name, interval, on_beat
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                heartbeat(self.client, self.name_)
                if self.on_beat is not None:
                    self.on_beat()
            except redis.RedisError:
                pass  # Redis restarting: beat again next time
            except Exception:  # e.g. the broker refusing a resend: never let the thread die
                log.warning("heartbeat hook failed", exc_info=True)
            self.stopped.wait(self.interval)
