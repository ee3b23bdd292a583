"""Workers as the scheduler sees them: heartbeat, host, and an exponentially weighted
throughput measured from completed tasks (samples per second, overheads included)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading

import redis

from . import clock, keys
from .scripts import source as scripts_source

WORKERS_INDEX = keys.WORKERS_INDEX
EWMA = 0.5  # weight of the newest task
# A worker's entry outlives its last heartbeat or task by this long, then expires (and leaves
# the index at the next read): dead workers are forgotten, and a round no longer deletes the
# queues of every worker ever seen.
WORKER_TTL = 600
PIDS_MARGIN_S = 0.1  # a beat judges a delivery's process only if stamped this long after the delivery arrived

log = logging.getLogger(__name__)


def worker_key(name: str) -> str:
    return keys.worker(name)


_ADDRESS: dict[int, str] = {}


def own_address(client: redis.Redis) -> str:
    """This machine's address as Redis sees it (CLIENT INFO), once per process: a worker in
    a container or a network namespace of its own shows its own address in `bpt workers`."""
    if not _ADDRESS.get(os.getpid()):
        try:
            address = client.client_info().get("addr", "").rsplit(":", 1)[0]
        except redis.RedisError:
            return "?"  # asked again at the next beat
        if not address:
            return "?"
        _ADDRESS[os.getpid()] = address
    return _ADDRESS[os.getpid()]


def heartbeat(client: redis.Redis, name: str, processes: int = 1, about: dict | None = None) -> None:
    """processes: the worker's training processes (its --concurrency): what it adds to a
    job's live K. Stamped with Redis's clock (broker/clock.py), not this machine's.
    about: what the worker says of itself (device, installed plug-in models), as strings."""
    beat = clock.now(client)
    pipe = client.pipeline(transaction=False)
    pipe.hset(worker_key(name), mapping={"heartbeat": beat, "host": socket.gethostname(),
                                         "address": own_address(client), "processes": processes, **(about or {})})
    pipe.hdel(worker_key(name), "stopped")
    pipe.expire(worker_key(name), WORKER_TTL)
    pipe.sadd(WORKERS_INDEX, name)
    pipe.execute()


def start_fresh(client: redis.Redis, name: str) -> None:
    """A worker process starting under a name an earlier one used: its task and sample counts
    start from zero (a reused name inherited the dead worker's); its measured rate stays, as
    the seed IDPA sizes its first tasks by."""
    client.hdel(worker_key(name), "tasks", "samples")


def is_alive(worker: dict, now: float, timeout: float) -> bool:
    """A worker is alive while its last beat is fresher than timeout and it has not signed off."""
    return not worker.get("stopped") and now - worker["heartbeat"] <= timeout


def sign_off(client: redis.Redis, name: str, token: str | None = None) -> None:
    """A worker shutting down: dead at once (the live K drops now, not a timeout later), and
    its claimed name (token) given back, so that restarted it gets the same name again."""
    client.hset(worker_key(name), "stopped", clock.now(client))
    if token is not None and client.get(name_claim_key(name)) == token.encode():
        client.delete(name_claim_key(name))


def live_workers(client: redis.Redis, timeout: float, now: float | None = None) -> dict[str, dict]:
    """The registry's entries of the workers whose heartbeat is fresher than timeout, by
    Redis's clock unless now is given."""
    now = clock.now(client) if now is None else now
    return {n: w for n, w in workers(client).items() if is_alive(w, now, timeout)}


def live_processes(client: redis.Redis, timeout: float, now: float | None = None, floor: int = 1,
                   exclude=()) -> int:
    """K, the training processes of every worker whose heartbeat is fresher than timeout
    (a worker with --concurrency 4 counts 4), leaving out the workers named in `exclude`
    (those that declined the job: they train none of it). Merge rules, the staleness bound
    and the release of the next epoch follow it as workers join, leave or die. At least
    `floor`. It counts the whole cluster: two jobs training at once each divide by both's
    workers."""
    return max(floor, sum(w["processes"] for n, w in live_workers(client, timeout, now).items() if n not in exclude))


def claim_name(client: redis.Redis, base: str, host: str, ttl: float, token: str) -> str:
    """The first of base@host, base-2@host, ... that no live worker holds, claimed for
    `token` (SET NX with a TTL the heartbeat renews): two workers started on one host get
    distinct names, so status, reports and Flower keep them apart."""
    now = clock.now(client)
    beating = {n for n, w in workers(client).items() if is_alive(w, now, ttl)}  # named by --name too
    for i in range(1, 1000):
        name = f"{base}@{host}" if i == 1 else f"{base}-{i}@{host}"
        key = name_claim_key(name)
        if client.get(key) == token.encode():  # ours already: a restart of the same worker
            return name
        if name not in beating and client.set(key, token, nx=True, px=int(ttl * 1000)):
            return name
    raise RuntimeError(f"no free worker name {base}-N@{host}")


def renew_name(client: redis.Redis, name: str, ttl: float) -> None:
    client.pexpire(name_claim_key(name), int(ttl * 1000))


def name_claim_key(name: str) -> str:
    return keys.worker_name_claim(name)


def record_task(client: redis.Redis, name: str, samples: int, seconds: float, rates_key: str | None = None,
                script=None) -> float:
    """Fold one task's throughput (one training process's samples/s) into the worker's rate
    in the registry and, with rates_key, in the job's own table (JobKeys.rates: a new job
    measures again, as the contract's probe says); atomically (rate.lua: the processes of
    one worker finish tasks concurrently). Returns the job's new rate (or the registry's)."""
    observed = samples / max(seconds, 1e-6)
    script = script or client.register_script(scripts_source("rate"))
    rate = float(script(keys=[worker_key(name)], args=["rate", observed, EWMA]))
    if rates_key:
        rate = float(script(keys=[rates_key], args=[name, observed, EWMA]))
    pipe = client.pipeline(transaction=False)
    pipe.hset(worker_key(name), "heartbeat", clock.now(client))
    pipe.expire(worker_key(name), WORKER_TTL)
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
        if not raw:  # its entry expired (WORKER_TTL): forget it
            client.srem(WORKERS_INDEX, name)
            continue
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        out[name] = {"host": fields.get("host", "?"), "address": fields.get("address", "?"), "heartbeat": float(fields.get("heartbeat", 0)),
                     "rate": float(fields["rate"]) if "rate" in fields else None,
                     "tasks": int(fields.get("tasks", 0)), "samples": int(fields.get("samples", 0)),
                     "processes": int(fields.get("processes", 1)), "stopped": float(fields.get("stopped", 0)),
                     "device": fields.get("device", "?"), "plugins": json.loads(fields.get("plugins", "{}")),
                     "pids": [int(p) for p in fields["pids"].split()] if "pids" in fields else None}
    return out


def forget(client: redis.Redis, name: str) -> None:
    client.srem(WORKERS_INDEX, name)
    client.delete(worker_key(name))


class HeartbeatThread(threading.Thread):
    """Beats every `interval` seconds from the worker's main process; stops with it. It does
    nothing else: the watchdogs it used to run held up beats past the liveness timeout
    (issue 26, finding 4)."""

    def __init__(self, client: redis.Redis, name: str, interval: float = 1.0, pids=None, processes: int = 1,
                 name_ttl: float | None = None, about: dict | None = None):
        """pids: a function giving the pids of the worker's training processes, sent with each
        beat (a task delivered again tells from them whether its earlier delivery still runs)."""
        super().__init__(daemon=True, name="bpt-heartbeat")
        self.client, self.name_, self.interval, self.pids = client, name, interval, pids
        self.about = about
        self.processes, self.name_ttl = processes, name_ttl
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                about = self.about if self.pids is None else {**(self.about or {}),
                                                               "pids": " ".join(map(str, self.pids()))}
                heartbeat(self.client, self.name_, self.processes, about)
                if self.name_ttl:
                    renew_name(self.client, self.name_, self.name_ttl)
            except redis.RedisError:
                pass  # Redis restarting: beat again next time
            except Exception:  # never let the thread die
                log.warning("heartbeat failed", exc_info=True)
            self.stopped.wait(self.interval)


def child_pids(pid: int) -> list[int]:
    """The pids of a process's children (Linux's /proc; [] elsewhere)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:  # that thread ended as we read
            continue
    return sorted(set(out))


def delivery_alive(pid: int, worker: dict | None, arrived: float, now: float, timeout: float) -> bool | None:
    """Whether an earlier delivery of a task, run by process `pid` of `worker` (its registry
    entry), may still be running, as a new delivery that arrived at `arrived` judges it:
    False when its worker is dead or no longer has that process, True when it does, None
    when the worker's last beat is older than the new delivery (wait for the next one). A
    worker that does not report its processes counts as not running it, as before."""
    if worker is None or not is_alive(worker, now, timeout) or worker.get("pids") is None:
        return False
    if worker["heartbeat"] < arrived + PIDS_MARGIN_S:  # its pids are read just before the beat is stamped
        return None
    return pid in worker["pids"]
