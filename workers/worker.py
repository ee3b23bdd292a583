"""Running a Celery worker process for bpt."""

from __future__ import annotations

import os
import secrets
import socket

import json

from bpt.model import devices
from bpt.model import plugins
from bpt.settings import Settings

from celery import signals

from bpt.broker.connection import connect
from bpt.broker import worker_registry
from bpt.broker.worker_registry import HeartbeatThread

from .queues import declare_dead_letters, declare_own_queue
from .reconciler import ReconcilerThread
from .app import CONTROL_QUEUE, TRAIN_QUEUE, make_app, worker_queue
from .runtime import WorkerRuntime
from .tasks import register_tasks


NAME_TTL_FACTOR = 3  # a claimed default name outlives its worker's last beat by 3 heartbeat timeouts


def default_name(client, settings: Settings, token: str) -> str:
    """bpt@HOST, or bpt-2@HOST, bpt-3@HOST ... when a live worker on this host holds it."""
    return worker_registry.claim_name(client, "bpt", socket.gethostname(),
                                      NAME_TTL_FACTOR * settings.heartbeat_timeout, token)


def full_name(name: str) -> str:
    """NAME@HOST for a name given without a host. Celery turns a bare --hostname NAME into
    celery@NAME for its tasks while the heartbeat used NAME: one worker was counted twice in
    the live K, and each push scaled down twice as much (issue 26, finding 5)."""
    return name if "@" in name else f"{name}@{socket.gethostname()}"


def run_worker(settings: Settings, name: str | None, concurrency: int = 1, loglevel: str = "INFO",
               slowdown: float = 1.0, queues: str = TRAIN_QUEUE) -> None:
    """Start a worker in this process; returns when it shuts down (SIGTERM: warm shutdown).

    Besides `queues` it consumes the scheduler's control queue and its own queue, and beats
    its heartbeat into Redis from a thread of this (main) process, counting `concurrency`
    training processes (that thread only beats: a beat held up by other work made a live
    worker look dead), and runs a ReconcilerThread, which reconciles the cluster's open jobs
    while this worker holds the reconciler lease. name None: a free default."""
    app = make_app(settings)
    declare_dead_letters(app)
    runtime = WorkerRuntime(settings, slowdown=slowdown)
    register_tasks(app, runtime)
    client = connect(settings.redis_url, settings.connect_timeout, settings.socket_timeout)
    claimed, token = name is None, secrets.token_hex(8)
    name = default_name(client, settings, token) if claimed else full_name(name)
    about = {"device": devices.describe(devices.resolve(settings.device)), "precision": settings.precision,
             "plugins": json.dumps(plugins.installed(), sort_keys=True)}
    main = os.getpid()
    beat = HeartbeatThread(client, name, pids=lambda: worker_registry.child_pids(main), processes=concurrency,
                           name_ttl=NAME_TTL_FACTOR * settings.heartbeat_timeout if claimed else None, about=about)
    # Beat once before serving: a job divides each push by the live processes, and a worker
    # that trained before its first beat would make the cluster look smaller than it is.
    worker_registry.start_fresh(client, name)
    worker_registry.heartbeat(client, name, concurrency, about)
    reconciler = ReconcilerThread(app, client, f"{name}/{token}", settings.heartbeat_timeout,
                                  shards=lambda: runtime.shards)
    signals.worker_ready.connect(lambda **_: (beat.start(), reconciler.start()), weak=False)
    signals.worker_shutdown.connect(lambda **_: _sign_off(beat, reconciler, client, name, token if claimed else None),
                                    weak=False)
    declare_own_queue(app, worker_queue(name))  # one declared otherwise (an older bpt): a one-line error
    queues = ",".join(dict.fromkeys(queues.split(",") + [CONTROL_QUEUE, worker_queue(name)]))
    app.worker_main(["worker", f"--hostname={name}", f"--concurrency={concurrency}", f"--queues={queues}",
                     f"--loglevel={loglevel}", "--pool=prefork", "--without-mingle", "--without-gossip"])


def _sign_off(beat: HeartbeatThread, reconciler: ReconcilerThread, client, name: str, token: str | None) -> None:
    reconciler.stop()
    beat.stopped.set()
    if beat.is_alive():
        beat.join(timeout=2 * beat.interval)  # a beat in flight must not land after the sign-off
    try:
        worker_registry.sign_off(client, name, token)
    except Exception:  # Redis gone at shutdown: the heartbeat timeout will tell instead
        pass
