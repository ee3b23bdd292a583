"""Running a Celery worker process for bpt."""

from __future__ import annotations

import socket
import time

from bpt.settings import Settings

from celery import signals

from bpt.broker.connection import connect
from bpt.broker.worker_registry import HeartbeatThread

from .scheduler import revive_stalled
from .watchdog import resend_stalled_waves
from .app import CONTROL_QUEUE, TRAIN_QUEUE, make_app, worker_queue
from .runtime import WorkerRuntime
from .tasks import register_tasks


def default_name(index: int | None = None) -> str:
    suffix = f"-{index}" if index is not None else ""
    return f"bpt{suffix}@{socket.gethostname()}"


def run_worker(settings: Settings, name: str, concurrency: int = 1, loglevel: str = "INFO",
               slowdown: float = 1.0, queues: str = TRAIN_QUEUE) -> None:
    """Start a worker in this process; returns when it shuts down (SIGTERM: warm shutdown).

    Besides `queues` it consumes the scheduler's control queue and its own queue, and beats
    its heartbeat into Redis from a thread of this (main) process; each beat also runs the
    watchdogs for stalled jobs (scheduler.revive_stalled, watchdog.resend_stalled_waves)."""
    app = make_app(settings)
    register_tasks(app, WorkerRuntime(settings, slowdown=slowdown))
    client = connect(settings.redis_url, settings.connect_timeout)
    def on_beat() -> None:
        now = time.time()
        revive_stalled(app, client, now)
        resend_stalled_waves(app, client, now)

    beat = HeartbeatThread(client, name, on_beat=on_beat)
    signals.worker_ready.connect(lambda **_: beat.start(), weak=False)
    queues = ",".join(dict.fromkeys(queues.split(",") + [CONTROL_QUEUE, worker_queue(name)]))
    app.worker_main(["worker", f"--hostname={name}", f"--concurrency={concurrency}", f"--queues={queues}",
                     f"--loglevel={loglevel}", "--pool=prefork", "--without-mingle", "--without-gossip"])
