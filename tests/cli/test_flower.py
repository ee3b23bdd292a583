"""Flower against a real job: its HTTP API, and its dashboard rendered by headless Chromium."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from bpt.broker import processes

pytestmark = pytest.mark.slow
AUTH = "admin:" + "pw-for-tests"


def get(url, auth=AUTH):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read().decode()


def start_flower(redis_url, log, env):
    """`bpt flower` on a free port, once it answers its health check: (process, base URL)."""
    port = processes.free_port()
    proc = processes.spawn([sys.executable, "-m", "bpt.cli", "flower", "--redis-url", redis_url, "--port", str(port)],
                           str(log), env=env)
    base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            get(base + "/healthcheck", auth=None)
            return proc, base
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.3)


@pytest.fixture(scope="module")
def flower(workers, redis_url, tmp_path_factory):
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    proc, base = start_flower(redis_url, log, {**os.environ, "BPT_FLOWER_AUTH": AUTH})
    job = subprocess.run([sys.executable, "-m", "bpt.cli", "train", "--redis-url", redis_url, "--epochs", "2",
                          "--quiet", "--json", "--out", str(tmp_path_factory.mktemp("out"))],
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    yield base, json.loads(job.stdout)["job_id"]
    processes.stop(proc)


def test_api_needs_credentials(flower):
    base, _ = flower
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(base + "/api/workers", auth=None)
    assert refused.value.code == 401


def test_api_lists_the_workers_and_the_jobs_tasks(flower, workers):
    base, job = flower
    _, body = get(base + "/api/workers?refresh=1")
    assert set(workers.names) <= set(json.loads(body))
    _, body = get(base + "/api/tasks?limit=1000")
    tasks = [t for t in json.loads(body).values() if job in (t.get("kwargs") or "")]
    assert tasks and all(t["name"] == "bpt.train_subset" for t in tasks)
    assert {"'epoch'", "'subset'"} <= set(tasks[0]["kwargs"].replace(":", " ").split())


def test_a_search_for_one_job_finds_its_tasks_with_staleness_and_accuracy(flower):
    """What docs/deployment.md tells users to type in the /tasks search box."""
    base, job = flower
    _, body = get(base + "/api/tasks?" + urllib.parse.urlencode({"search": f"kwargs:job_id={job}", "limit": 1000}))
    tasks = list(json.loads(body).values())
    assert tasks and all(job in t["kwargs"] for t in tasks)
    done = [t for t in tasks if t["state"] == "SUCCESS"]
    assert done and all("'staleness'" in t["result"] and "'accuracy'" in t["result"] for t in done)
    _, other = get(base + "/api/tasks?" + urllib.parse.urlencode({"search": "kwargs:job_id=no-such-job"}))
    assert json.loads(other) == {}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_dashboard_renders_the_workers_in_headless_chromium(flower, workers, tmp_path):
    base, _ = flower
    url = base.replace("http://", f"http://{AUTH}@") + "/workers"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90).stdout
    for name in workers.names:
        assert name in dom
    assert "Online" in dom
    tasks_page = subprocess.run(["chromium", *flags, "--dump-dom", url.replace("/workers", "/tasks")],
                                capture_output=True, text=True, timeout=90).stdout
    headers = [h.lower() for h in re.findall(r"<th[^>]*>\s*([^<]+?)\s*</th>", tasks_page)]
    assert {"kwargs", "result", "worker"} <= set(headers), headers


def test_secrets_are_not_on_flowers_command_line(flower):
    """`ps` shows every process's command line to every user of the machine."""
    base, _ = flower
    port = base.rsplit(":", 1)[1]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "flower" in argv and f"--port={port}" in argv:
            assert not any("pw-for-tests" in a or "redis://" in a for a in argv), argv
            return
    pytest.fail("no Flower process found")


def test_without_credentials_flower_makes_a_password_and_prints_it_once(workers, redis_url, tmp_path):
    log = tmp_path / "flower.log"
    proc, base = start_flower(redis_url, log, {k: v for k, v in os.environ.items() if k != "BPT_FLOWER_AUTH"})
    try:
        match = re.search(r"user admin, password (\S+) ", log.read_text())
        assert match, log.read_text()
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(base + "/api/workers", auth=None)
        assert refused.value.code == 401
        status, _ = get(base + "/api/workers", auth="admin:" + match.group(1))
        assert status == 200
    finally:
        processes.stop(proc)
