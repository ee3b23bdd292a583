"""The Celery app, built from Settings (never at import time).

JSON only, late acknowledgement with requeue when a worker process dies, one task
prefetched at a time, and a visibility timeout far above the longest task.
"""

from __future__ import annotations

import ssl

from celery import Celery

from bpt.settings import Settings

TRAIN_QUEUE = "bpt.train"
TRAIN_TASK = "bpt.train_subset"
RANGE_TASK = "bpt.train_range"
SCHEDULE_TASK = "bpt.schedule"
FINISH_TASK = "bpt.finish"  # takes over finishing a job whose finisher died (workers/watchdog.py)
CONTROL_QUEUE = "bpt.control"


def worker_queue(name: str) -> str:
    """Each worker's own queue, where the scheduler routes its ranges."""
    return f"bpt.w.{name}"

RESTORE_SWEEP_SECONDS = 10


def make_app(settings: Settings) -> Celery:
    app = Celery("bpt", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=TRAIN_QUEUE,
        task_ignore_result=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # A task whose whole worker died is restored visibility_timeout after delivery, found
        # by a sweep every RESTORE_SWEEP_SECONDS (kombu's default sweep is every 100 s).
        # Deadlines and keep-alive on the broker's connections too (a publish on a half-open
        # connection would wait forever); kombu checks its BRPOP connection every
        # health_check_interval seconds.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  "unacked_restore_interval": RESTORE_SWEEP_SECONDS,
                                  "unacked_restore_throttle": 1,
                                  "socket_timeout": settings.socket_timeout,
                                  "socket_connect_timeout": settings.connect_timeout,
                                  "socket_keepalive": True,
                                  "health_check_interval": 25},
    )
    if settings.redis_url.startswith("rediss://"):
        app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return app
