"""Local worker processes for the embedded mode and the tests."""

from __future__ import annotations

import os
import signal
import socket
import sys
import shutil
import tempfile
import time

import redis
from kombu.exceptions import OperationalError

from bpt.errors import BptError
from bpt.settings import Settings
from bpt.broker import processes

from .app import make_app


def worker_env(settings: Settings) -> dict:
    """The environment a local `bpt worker` process gets: this process's, plus the settings
    a worker reads from BPT_* variables."""
    env = dict(os.environ, BPT_REDIS_URL=settings.redis_url, BPT_THREADS=str(settings.threads),
                BPT_VISIBILITY_TIMEOUT=str(settings.visibility_timeout),
                BPT_HEARTBEAT_TIMEOUT=str(settings.heartbeat_timeout), BPT_DEVICE=settings.device,
                BPT_PRECISION=settings.precision, PYTHONUNBUFFERED="1")
    for name in ("BPT_REDIS_CA", "BPT_REDIS_CERT", "BPT_REDIS_KEY"):  # folded into the URLs already: an
        env.pop(name, None)  # inherited one would fold in again over the caller's
    for name, value in (("BPT_BROKER_URL", settings.broker_url), ("BPT_WEIGHTS_URL", settings.weights_url),
                        ("BPT_WEIGHTS_SHARDS", str(settings.weights_shards) if settings.weights_shards else None)):
        env.pop(name, None)
        if value:
            env[name] = value
    return env


class LocalWorkers:
    """K worker processes named bpt-1@host ... bpt-K@host, each with `concurrency` training
    (pool) processes: K x 1 for tests that kill or slow one worker, 1 x N for the embedded
    run (one import of torch instead of N; the pool processes are forked from it)."""

    def __init__(self, settings: Settings, count: int, slowdowns: list[float] | None = None,
                 log_dir: str | None = None, concurrency: int = 1):
        self.settings = settings
        self.count = count
        self.concurrency = concurrency
        self.slowdowns = slowdowns or [1.0] * count
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="bpt-workers-")
        self.own_log_dir = log_dir is None  # removed at stop, unless a worker failed (its log says why)
        self.failed = False
        self.procs = []
        self.names = []

    def start(self, timeout: float = 90.0) -> "LocalWorkers":
        try:
            self.spawn()
            self.wait_ready(timeout)
        except BaseException:  # Ctrl-C while starting too: __exit__ never runs if __enter__ fails
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        """Start the processes without waiting for them (wait_ready does; stop cleans up)."""
        env = worker_env(self.settings)
        for i in range(1, self.count + 1):
            name = f"bpt-{i}@{socket.gethostname()}"
            argv = [sys.executable, "-m", "bpt.cli", "worker", "--name", name, "--concurrency", str(self.concurrency),
                    "--slowdown", str(self.slowdowns[i - 1]), "--loglevel", "WARNING"]
            self.procs.append(processes.spawn(argv, os.path.join(self.log_dir, f"worker-{i}.log"), env=env))
            self.names.append(name)

    def wait_ready(self, timeout: float) -> None:
        app = make_app(self.settings)
        deadline, last_error = time.monotonic() + timeout, ""
        try:
            while time.monotonic() < deadline:
                dead = [n for n, p in zip(self.names, self.procs) if p.poll() is not None]
                if dead:
                    self.failed = True
                    raise BptError(f"worker {dead[0]} exited at start; see {self.log_dir}")
                try:
                    replies = app.control.ping(timeout=0.5)
                except (redis.AuthenticationError, redis.ResponseError):
                    raise  # a wrong password or a refused command: no waiting makes it right
                except (redis.RedisError, OperationalError, OSError) as e:
                    # a ping's connection dropped (CI once saw Redis close it while workers
                    # started): polling again is what a not-yet-ready worker gets too; a server
                    # that is really gone fails the deadline, with this error in the message
                    last_error = f" (last ping: {e})"
                    time.sleep(0.2)
                    continue
                last_error = ""
                seen = {name for reply in replies for name in reply}
                if seen >= set(self.names):
                    return
            self.failed = True
            raise BptError(f"workers did not come up within {timeout:.0f}s{last_error}; see {self.log_dir}")
        finally:
            app.close()

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def request_stop(self) -> None:
        """Ask every worker to shut down (warm: a task in hand finishes) without waiting."""
        for proc in self.procs:
            if proc.poll() is None:
                processes.signal_group(proc, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every worker: SIGTERM (a warm shutdown), SIGKILL after `grace` seconds."""
        if any(proc.poll() is not None for proc in self.procs):  # one died before it was asked: keep its log
            self.failed = True
        self.request_stop()  # ask all first, then wait: they shut down in parallel
        for proc in self.procs:
            processes.stop(proc, grace)
        self.procs = []
        if self.own_log_dir and not self.failed:  # each embedded run left a /tmp/bpt-workers-XXXX behind
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> "LocalWorkers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
