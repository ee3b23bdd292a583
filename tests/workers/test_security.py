"""Nothing from the network runs code, and nobody without the password gets in."""

import os
import subprocess
import sys
import time
import uuid

import pytest

from bpt.settings import Settings
from bpt.broker.redis_server import PrivateRedis
from bpt.workers.app import TRAIN_QUEUE, TRAIN_TASK
from bpt.workers.launcher import LocalWorkers


class Exploit:
    """Pickling this makes the unpickler run a shell command."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_celery_accepts_json_only(app):
    assert list(app.conf.accept_content) == ["json"]
    assert app.conf.task_serializer == "json" and app.conf.result_serializer == "json"


@pytest.mark.slow
def test_a_pickled_message_on_the_queue_is_refused_not_executed(workers, app, tmp_path):
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    app.send_task(TRAIN_TASK, args=[Exploit(str(marker)), 0, 0, 0], queue=TRAIN_QUEUE, serializer="pickle")
    time.sleep(3)  # the workers are idle: they have long since taken the message
    assert not marker.exists()
    assert app.connection().default_channel.client.llen(TRAIN_QUEUE) == 0  # taken, and dropped


@pytest.mark.slow
def test_job_on_a_password_protected_redis_and_a_wrong_password(tmp_path):
    password = uuid.uuid4().hex
    with PrivateRedis(password=password) as server:
        settings = Settings(redis_url=server.url, workers=1)
        with LocalWorkers(settings, 1):
            ok = subprocess.run([sys.executable, "-m", "bpt.cli", "train", "--redis-url", server.url, "--epochs", "2",
                                 "--workers", "1", "--quiet", "--out", str(tmp_path)], capture_output=True, text=True,
                                timeout=120)
            assert ok.returncode == 0, ok.stderr
        wrong = server.url.replace(password, "not-the-password")
        refused = subprocess.run([sys.executable, "-m", "bpt.cli", "jobs"], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "BPT_REDIS_URL": wrong})  # a password goes in the variable
        anonymous = subprocess.run([sys.executable, "-m", "bpt.cli", "jobs", "--redis-url", server.url.replace(f":{password}@", "")],
                                   capture_output=True, text=True, timeout=60)
    assert refused.returncode == 4 and anonymous.returncode == 4
    assert refused.stderr.startswith("error: Redis at redis://:***@127.0.0.1") and "refused the credentials" in refused.stderr
    assert "not-the-password" not in refused.stderr  # never echo a password
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "refused the credentials" in anonymous.stderr
