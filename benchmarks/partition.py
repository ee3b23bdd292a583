"""Hosts of their own on one machine, for faults that cross a network: each a Linux network
namespace joined to this one by a veth pair, with its own address and (through
`unshare --uts`) its own host name. Cutting a host's link is a real partition: its processes
live on, and Redis cannot hear them, nor they it.

    with NetHosts(4) as hosts:
        argv = hosts.argv(0, "host-0", ["bpt", "worker"])   # runs in host 0, named host-0
        url = f"redis://{hosts.gateway(0)}:{port}/0"          # what host 0 dials to reach us
        hosts.cut(0); ...; hosts.heal(0)

Needs root and iproute2 (`ip netns`); NetHosts.unavailable() says why not, in a line, so
that a test or the soak can skip with the reason. Used by the chaos soak (issue 26's
partition); ContainerHosts below gives the container faults (issue 29) the same cut and heal.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

SUBNET = "10.77"  # host i: 10.77.<i+1>.2 in its namespace, 10.77.<i+1>.1 on our side


class NetHosts:
    def __init__(self, count: int):
        self.count = count
        self.tag = secrets.token_hex(3)
        self.made: list[int] = []

    @staticmethod
    def unavailable() -> str | None:
        """Why hosts cannot be made here, or None when they can."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if not shutil.which("ip") or not shutil.which("unshare"):
            return "iproute2's `ip` and util-linux's `unshare` are needed"
        probe = f"bpt-probe-{secrets.token_hex(3)}"
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def namespace(self, i: int) -> str:
        return f"bpt-{self.tag}-{i}"

    def _link(self, i: int) -> str:  # our side of host i's veth pair (15 characters at most)
        return f"vb{self.tag}{i}"

    def gateway(self, i: int) -> str:
        """Our address as host i sees it: what its processes dial to reach a server here."""
        return f"{SUBNET}.{i + 1}.1"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}.2"

    def gateways(self) -> list[str]:
        return [self.gateway(i) for i in range(self.count)]

    def __enter__(self) -> "NetHosts":
        try:
            for i in range(self.count):
                self._make(i)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make(self, i: int) -> None:
        ns, ours, theirs = self.namespace(i), self._link(i), f"vn{self.tag}{i}"
        _ip("netns", "add", ns)
        self.made.append(i)
        _ip("link", "add", ours, "type", "veth", "peer", "name", theirs)
        _ip("link", "set", theirs, "netns", ns)
        _ip("addr", "add", f"{self.gateway(i)}/24", "dev", ours)
        _ip("link", "set", ours, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{self.address(i)}/24", "dev", theirs)
        _ip("netns", "exec", ns, "ip", "link", "set", theirs, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def argv(self, i: int, hostname: str, argv: list[str]) -> list[str]:
        """argv run in host i, under a host name of its own."""
        return ["ip", "netns", "exec", self.namespace(i), "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', hostname, *argv]

    def cut(self, i: int) -> None:
        """Host i's link goes down: a partition (its processes go on)."""
        _ip("link", "set", self._link(i), "down")

    def heal(self, i: int) -> None:
        _ip("link", "set", self._link(i), "up")

    def close(self) -> None:
        for i in self.made:
            subprocess.run(["ip", "netns", "del", self.namespace(i)], capture_output=True)  # its veth goes too
            subprocess.run(["ip", "link", "del", self._link(i)], capture_output=True)
        self.made.clear()


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class ContainerHosts:
    """The same cut and heal for hosts that are containers on one Docker network (issue 29):
    `docker network disconnect` is the partition (the container lives; Redis cannot hear it,
    nor it Redis), `docker network connect` heals it. Also the container faults' other two
    moves: kill (SIGKILL of the whole host) and freeze/thaw (`docker pause`: SIGSTOP)."""

    def __init__(self, network: str, containers: list[str]):
        self.network, self.containers = network, list(containers)

    def _docker(self, *args: str) -> None:
        done = subprocess.run(["docker", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")

    def cut(self, i: int) -> None:
        self._docker("network", "disconnect", self.network, self.containers[i])

    def heal(self, i: int) -> None:
        self._docker("network", "connect", self.network, self.containers[i])

    def kill(self, i: int) -> None:
        self._docker("kill", self.containers[i])

    def freeze(self, i: int) -> None:
        self._docker("pause", self.containers[i])

    def thaw(self, i: int) -> None:
        self._docker("unpause", self.containers[i])
