"""A worker named without @HOST is one worker, not two (issue 26, finding 5)."""

import socket
import subprocess
import sys
import time

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.settings import Settings
from bpt.broker import worker_registry
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.workers.app import make_app
from bpt.workers.launcher import worker_env
from bpt.workers.submit import submit
from bpt.workers.worker import full_name


def test_a_bare_name_gets_this_hosts_name_and_a_full_one_is_kept():
    assert full_name("solo") == f"solo@{socket.gethostname()}"
    assert full_name("solo@elsewhere") == "solo@elsewhere"


def test_a_worker_started_as_solo_trains_and_counts_once():
    """`bpt worker --name solo` was listed as solo and celery@solo, both alive: pushes logged
    live=2 and half scale. After a job it must be one live worker of one process."""
    with PrivateRedis() as server:
        import dataclasses

        settings = dataclasses.replace(Settings(), redis_url=server.url, poll_seconds=0.05)
        env = {**worker_env(settings), "BPT_REDIS_URL": server.url}
        proc = subprocess.Popen([sys.executable, "-m", "bpt.cli", "worker", "--name", "solo", "--concurrency", "1",
                                 "--loglevel", "WARNING"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = connect(server.url)
        app = make_app(settings)
        try:
            deadline = time.monotonic() + 60
            while not worker_registry.live_workers(client, settings.heartbeat_timeout):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.2)
            spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=2, workers=1))
            store = submit(app, client, settings, spec, data, weights)
            while store.status() not in FINISHED:
                assert time.monotonic() < deadline + 60, store.state()
                time.sleep(0.1)
            assert store.status() == "done"
            assert set(worker_registry.live_workers(client, settings.heartbeat_timeout)) == {full_name("solo")}
            assert worker_registry.live_processes(client, settings.heartbeat_timeout) == 1
            assert {e["live"] for e in store.events() if e["event"] == "push-accepted"} == {1}
        finally:
            app.close()
            proc.terminate()
            proc.wait(timeout=30)
