"""Child processes that die with their parent and are always stopped."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def spawn(argv: list[str], log_path: str, env: dict | None = None) -> subprocess.Popen:
    """Start a child in its own session (a terminal's Ctrl-C reaches only us, and we stop it
    in order) that gets SIGTERM if we die without cleaning up."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
    finally:
        log.close()


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL whatever is left."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    signal_group(proc, signal.SIGKILL)  # also reaps grandchildren left in the group
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port(below: int | None = None) -> int:
    """A free loopback port (under `below`, if given: a cluster node's bus port is its port
    + 10000, so a node's own must stay under 55536)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if below is None or port < below:
            return port
    raise OSError(f"no free loopback port under {below}")
