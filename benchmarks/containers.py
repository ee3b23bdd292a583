"""The chaos soak's container mode (issue 29): worker containers built offline, brought up
with `docker-compose up --scale worker=N`, one undisturbed job and one with faults across
hosts (a worker killed, another cut off its network for 60 s, a third paused, Redis
restarted in its container), judged as the soak judges: done, every subset's outcome once,
version = accepted, accuracy against the undisturbed run.

    python -m benchmarks.chaos --containers        # prints the table, writes chaos-containers.json

tests/test_containers.py runs the same two jobs. Needs a Docker engine, docker-compose
(v1 or the v2 plugin) and debootstrap; `unavailable()` says why not, in a line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import redis

from bpt.broker.keys import JobKeys

from .partition import ContainerHosts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPT = [sys.executable, "-m", "bpt.cli"]
EPOCHS = 6
PARTITION_S = 60.0
PAUSE_S = 15.0


def unavailable() -> str | None:
    """None when a Docker engine answers (started here if this is root and it is not
    running) and docker-compose is there; else why not."""
    if not shutil.which("docker"):
        return "docker is not installed (.ci/run installs docker.io)"
    if compose_tool() is None:
        return "neither docker-compose nor the docker compose plugin is installed (.ci/run installs docker-compose)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return None
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        return "the Docker engine is not running and cannot be started here"
    _STARTED.append(subprocess.Popen(["dockerd"], stdout=open("/tmp/bpt-dockerd.log", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True))
    for _ in range(60):
        if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return None
        time.sleep(0.5)
    return "dockerd did not start (see /tmp/bpt-dockerd.log)"


_STARTED: list = []  # the dockerd this process started, if any


def stop_engine() -> None:
    """Stop the dockerd `unavailable()` started (one already running is left alone): the
    engine and its iptables rules are there only while containers are wanted."""
    while _STARTED:
        proc = _STARTED.pop()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def compose_tool():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


class BuildUnavailable(Exception):
    """The offline base image could not be made here (no debootstrap, no Debian mirror)."""


def build_image() -> tuple[str, float]:
    """(image name, seconds) from scripts/build-images."""
    began = time.monotonic()
    built = subprocess.run([os.path.join(ROOT, "scripts", "build-images")], capture_output=True, text=True,
                           timeout=1500)
    if built.returncode != 0 and "debootstrap" in built.stderr:
        raise BuildUnavailable(built.stderr.strip().splitlines()[-1])
    if built.returncode != 0:
        raise RuntimeError(f"scripts/build-images failed: {built.stderr.strip()[-500:]}")
    return built.stdout.strip().splitlines()[-1], time.monotonic() - began


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_data(directory: str) -> str:
    """digits-aug (12,000 distorted training images, digits' own validation and test) as an
    array directory the workers read from the mounted volume."""
    from bpt.data import datasets

    digits = datasets.digits_aug(samples=12_000, seed=0)
    arrays = os.path.join(directory, "digits-aug")
    os.makedirs(arrays, exist_ok=True)
    for name, x, y in (("", digits.x_train, digits.y_train), ("_val", digits.x_val, digits.y_val),
                       ("_test", digits.x_test, digits.y_test)):
        np.save(os.path.join(arrays, f"x{name}.npy"), x.astype(np.float32))
        np.save(os.path.join(arrays, f"y{name}.npy"), y.astype(np.int64))
    os.chmod(directory, 0o755)
    return arrays


def alive_workers(client) -> dict:
    from bpt.broker import clock, worker_registry

    try:
        now = clock.now(client)
        return {n: w for n, w in worker_registry.workers(client).items() if worker_registry.is_alive(w, now, 10.0)}
    except redis.RedisError:
        return {}


@contextlib.contextmanager
def cluster(image: str, data_dir: str, workers: int = 4):
    """A compose project (redis, N workers, flower, exporter) on `image`, taken down after."""
    password = "containers-" + uuid.uuid4().hex[:8]
    port, project = _free_port(), "bpt" + uuid.uuid4().hex[:8]
    env = {**os.environ, "BPT_IMAGE": image, "BPT_REDIS_IMAGE": image, "BPT_REDIS_PASSWORD": password,
           "FLOWER_BASIC_AUTH": "admin:" + password, "BPT_DATA_DIR": data_dir, "BPT_REDIS_PORT": str(port),
           "BPT_FLOWER_PORT": str(_free_port()), "BPT_EXPORTER_PORT": str(_free_port())}
    compose = compose_tool() + ["-f", os.path.join(ROOT, "docker-compose.yml"), "-p", project]
    try:
        up = subprocess.run(compose + ["up", "-d", "--no-build", "--scale", f"worker={workers}", "redis", "worker",
                                       "flower", "exporter"], capture_output=True, text=True, env=env, timeout=300)
        if up.returncode != 0:
            raise RuntimeError(f"docker-compose up: {up.stderr.strip()[-500:]}")
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 120
        while len(alive_workers(client)) < workers:
            if time.monotonic() > deadline:
                logs = subprocess.run(compose + ["logs", "--tail", "20"], capture_output=True, text=True, env=env)
                raise RuntimeError(f"{workers} workers not alive in 120 s: {logs.stdout[-1500:]}")
            time.sleep(0.5)
        names = sorted(subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}", "--filter",
             "label=com.docker.compose.service=worker", "--format", "{{.Names}}"],
            capture_output=True, text=True).stdout.split())
        yield {"url": url, "compose": compose, "env": env, "workers": names, "client": client,
               "network": f"{project}_default"}
    finally:
        subprocess.run(compose + ["down", "-v", "--remove-orphans", "-t", "2"], capture_output=True, env=env,
                       timeout=300)


def submit(c: dict, data: str) -> str:
    done = subprocess.run(BPT + ["train", "--dataset", data, "--epochs", str(EPOCHS), "--subset-size", "256",
                                 "--detach", "--quiet"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BPT_REDIS_URL": c["url"]})
    if done.returncode != 0:
        raise RuntimeError(f"submit: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


def wait(client, job: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = {k.decode(): v.decode() for k, v in client.hgetall(JobKeys(job).state).items()}
            if state.get("status") in ("done", "failed", "cancelled"):
                return state
        except redis.RedisError:
            pass  # Redis restarting
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job} not done in {timeout} s: {stuck(client, job)}")
        time.sleep(0.5)


def stuck(client, job: str) -> str:
    """What a job that did not end was doing: its state, the live workers, the train queue's
    depth and its last events (a hang in CI is diagnosed from this line alone)."""
    try:
        from bpt.broker import clock, recovery
        from bpt.broker.job_store import JobStore
        from bpt.workers.app import TRAIN_QUEUE

        store = JobStore(client, job)
        state = store.state()
        brief = {k: state.get(k) for k in ("status", "epoch", "accepted", "rejected", "duplicates", "lost_workers")}
        brief["version"] = int(client.hget(store.keys.weights, "version") or 0)
        brief["alive"] = sorted(alive_workers(client))
        brief["queued_in_redis"] = client.llen(TRAIN_QUEUE)  # compose's broker: this Redis, db 0 (not RabbitMQ)
        brief["reconciler"] = recovery.lease_holder(client)  # who reconciles now (None: nobody)
        now = clock.now(client)
        events = [e for e in store.events() if e["event"] != "guard-check"][-12:]
        brief["last_events"] = [{"ago_s": round(now - e["time"], 1),
                                 **{k: v for k, v in e.items() if k in ("event", "worker", "epoch", "piece", "reason",
                                                                         "subsets", "version", "action")}}
                                for e in events]
        return json.dumps(brief, default=str)
    except Exception as e:  # a diagnosis must never replace the timeout it explains
        return f"(its state could not be read: {e})"


def judge(client, job: str, wall: float) -> dict:
    """The job's outcome as the soak judges it."""
    from bpt.broker.job_store import JobStore
    from bpt.plan import partition

    store = JobStore(client, job)
    spec, state = store.spec(), store.state()
    events = store.events()
    lives = [e["live"] for e in events if e["event"] == "push-accepted"]
    return {"job": job, "status": state["status"], "wall_s": round(wall, 1),
            "test_accuracy": state.get("test_accuracy"),
            "subsets": spec.epochs * len(partition.subsets(spec.n_train, spec.subset_size)),
            "outcomes": client.hlen(store.keys.applied), "version": int(client.hget(store.keys.weights, "version")),
            "accepted": int(state["accepted"]), "rejected": int(state.get("rejected", 0)),
            "duplicates": int(state.get("duplicates", 0)),
            "trained_by": sorted({k.decode().rsplit(":", 1)[0] for k in client.hkeys(store.keys.worker_stats)}),
            "live_4_share": round(lives.count(4) / len(lives), 3) if lives else None}


def calm_run(c: dict, data: str) -> dict:
    began = time.monotonic()
    job = submit(c, data)
    wait(c["client"], job, 300)
    return judge(c["client"], job, time.monotonic() - began)


def fault_run(c: dict, data: str, restart_redis: bool = True) -> dict:
    """One job, four faults once it has 20 versions: a worker killed, another cut off for
    PARTITION_S, a third paused for PAUSE_S, then Redis restarted in its container."""
    client, began = c["client"], time.monotonic()
    job = submit(c, data)
    while int(client.hget(JobKeys(job).weights, "version") or 0) < 20:
        if time.monotonic() - began > 120:
            raise TimeoutError("the faulted job did not start")
        time.sleep(0.1)
    hosts, faults = ContainerHosts(c["network"], c["workers"]), []

    def mark(what):
        faults.append({"t": round(time.monotonic() - began, 1), "what": what})

    hosts.kill(0)
    mark(f"docker kill {c['workers'][0]}")
    hosts.cut(1)
    cut_at = time.monotonic()
    mark(f"docker network disconnect {c['workers'][1]} ({PARTITION_S:.0f} s)")
    hosts.freeze(2)
    mark(f"docker pause {c['workers'][2]} ({PAUSE_S:.0f} s)")
    time.sleep(PAUSE_S)
    hosts.thaw(2)
    mark("docker unpause")
    if restart_redis:
        done = subprocess.run(c["compose"] + ["restart", "-t", "5", "redis"], capture_output=True, text=True,
                              env=c["env"], timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"restart redis: {done.stderr}")
        mark("redis restarted")
    wait(client, job, 400)
    ended = time.monotonic() - began
    time.sleep(max(0.0, PARTITION_S - (time.monotonic() - cut_at)))  # the partition lasts its time, job over or not
    hosts.heal(1)
    mark("docker network connect")
    time.sleep(5)  # the cut worker's late push, if it had one, arrives and is refused
    outcome = judge(client, job, ended)
    outcome["faults"] = faults
    return outcome


def main() -> dict:
    """The container mode of the chaos soak: build, up, calm, faults, down."""
    why = unavailable()
    if why:
        print(f"skipped: {why}")
        return {}
    try:
        return _main()
    finally:
        stop_engine()


def _main() -> dict:
    image, seconds = build_image()
    print(f"image {image} built in {seconds:.0f} s")
    import tempfile

    with tempfile.TemporaryDirectory() as data_dir:
        data = write_data(data_dir)
        with cluster(image, data_dir) as c:
            calm = calm_run(c, data)
            print(f"undisturbed: {json.dumps(calm)}")
            chaos = fault_run(c, data)
            print(f"faults: {json.dumps(chaos)}")
    return {"image_build_s": round(seconds, 1), "undisturbed": calm, "chaos": chaos}
