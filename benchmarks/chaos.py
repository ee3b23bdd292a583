"""The chaos soak (issue 15): one job trained undisturbed, then the same job again while
workers are killed, Redis restarts (cleanly and with SIGKILL), a worker is frozen, one runs
with its clock skewed, and another job is cancelled and resubmitted midway. Both runs have
10,000 finished jobs in the index. The chaos run also has the reconciler's cases (issue
26): a sync-rule job, a queued job whose messages were lost, and a job whose finisher
stopped for 90 s holding its claim. Where network namespaces can be made (root, iproute2),
every worker runs in a host of its own (own address over veth, own host name) and one
worker's link goes down for 60 s mid-job, then comes back (benchmarks/partition.py).

    python -m benchmarks.chaos            # the full soak: a job of about 3 minutes undisturbed
    python -m benchmarks.chaos --short    # about 2 minutes in all (the version the tests run)

Four workers of two training processes each, on a private Redis with AOF (everysec). Every
disturbance is bounded in count and time and placed at a fraction of the undisturbed run's
wall time. Reported: whether each job completed; outcomes in the applied hash against the
job's (epoch, subset) pairs (one outcome each: nothing applied twice, every subset trained or
its refusal counted); version against accepted pushes; accuracy against the undisturbed run;
Redis keys and memory and the workers' memory over time. Table on stdout, JSON in
benchmarks/results/chaos[-short].json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from bpt.settings import Settings
from bpt.job import lifecycle
from bpt.broker import processes
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED, JobStore
from bpt.broker.redis_server import PrivateRedis

from .chaos_jobs import (FINISHER_STOPPED_S, PROCESSES, WORKERS, RecoveryCases, add_finished_jobs, job_choices,
                         outcome, submit_job)
from .common import table, write_json
from .partition import NetHosts

SKEW = "+60s"
VISIBILITY_TIMEOUT = 20  # a killed worker's unacknowledged task comes back after this
FINISHED_JOBS = 10_000  # finished jobs put in the index first (a pass must not walk them)


@dataclasses.dataclass(frozen=True)
class Plan:
    samples: int  # digits-aug training samples of the main job
    epochs: int
    kill_every: tuple[float, float]  # seconds between two kill -9 of a random worker
    max_kills: int
    frozen_seconds: float  # SIGSTOP of one worker for this long
    partition_seconds: float = 60.0  # one worker's host cut off the network for this long


FULL = Plan(samples=60_000, epochs=24, kill_every=(10.0, 20.0), max_kills=12, frozen_seconds=30.0)
SHORT = Plan(samples=20_000, epochs=6, kill_every=(5.0, 9.0), max_kills=3, frozen_seconds=10.0)  # kills fit in 30 s


class Fleet:
    """Worker processes started, killed and frozen one by one (launcher.LocalWorkers starts
    them all alike and only together)."""

    def __init__(self, settings: Settings, log_dir: str, hosts=None, port: int = 0):
        """hosts: a partition.NetHosts: each worker started runs in a host of its own (its
        own address and host name), dialling Redis's `port` on our side of its link."""
        self.settings, self.log_dir, self.hosts, self.port = settings, log_dir, hosts, port
        self.procs: dict[str, object] = {}
        self.host_of: dict[str, int] = {}
        self.skewed: str | None = None
        self.started = 0

    def start(self, skew: str | None = None) -> str:
        self.started += 1
        from bpt.workers.launcher import worker_env

        settings, host = self.settings, None
        if self.hosts is not None:
            host = self.started - 1
            settings = dataclasses.replace(settings, redis_url=f"redis://{self.hosts.gateway(host)}:{self.port}/0")
        name = f"chaos-{self.started}@{socket.gethostname() if host is None else f'host-{host}'}"
        env = worker_env(settings)
        argv = [sys.executable, "-m", "bpt.cli", "worker", "--name", name, "--concurrency", str(PROCESSES),
                "--loglevel", "WARNING"]
        if skew:
            # The monotonic clock gets the same constant offset, which no duration sees. Leaving
            # it real (FAKETIME_DONT_FAKE_MONOTONIC=1) made every time.sleep() in the process
            # raise "OSError: [Errno 22] Invalid argument" (libfaketime with Python 3.11's
            # clock_nanosleep): a task on that worker that waited out a Redis restart failed
            # its job, and the chaos test's neighbour job ended 'failed' in 2 of 3 CI runs.
            argv = ["faketime", "-f", skew] + argv
            self.skewed = name
        if host is not None:
            argv = self.hosts.argv(host, f"host-{host}", argv)
            self.host_of[name] = host
        self.procs[name] = processes.spawn(argv, os.path.join(self.log_dir, f"{name}.log"), env=env)
        return name

    def kill(self, name: str) -> None:
        processes.signal_group(self.procs.pop(name), signal.SIGKILL)  # main and pool processes: a dead machine

    def signal(self, name: str, sig: int) -> None:
        processes.signal_group(self.procs[name], sig)

    def rss_mb(self) -> float:
        import psutil

        total = 0
        for proc in self.procs.values():
            try:
                parent = psutil.Process(proc.pid)
                total += sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
            except psutil.Error:
                pass
        return total / 2**20

    def stop(self) -> None:
        for proc in self.procs.values():
            processes.stop(proc, grace=5)
        self.procs.clear()


def wait_ready(app, names: list[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(names) <= set().union(*(r.keys() for r in app.control.ping(timeout=0.5) or [{}])):
            return
        time.sleep(0.2)
    raise RuntimeError(f"workers {names} did not start")


class Sampler(threading.Thread):
    """Redis's keys and memory and the workers' memory, every `every` seconds."""

    def __init__(self, url: str, fleet: Fleet, every: float = 2.0):
        super().__init__(daemon=True)
        self.url, self.fleet, self.every = url, fleet, every
        self.samples: list[dict] = []
        self.done = threading.Event()

    def run(self) -> None:
        client, began = None, time.monotonic()
        while not self.done.wait(self.every):
            try:
                client = client or connect(self.url, timeout=1.0, socket_timeout=2.0)
                self.samples.append({"t": round(time.monotonic() - began, 1), "keys": client.dbsize(),
                                     "redis_mb": client.info("memory")["used_memory"] / 2**20,
                                     "workers_mb": self.fleet.rss_mb()})
            except Exception:  # Redis restarting: skip this sample
                client = None


def took_a_task(client, store, worker: str) -> bool | None:
    """Whether `worker` had taken a task of the job, finished or in hand (what the
    reconciler's worker-lost report looks for); None when Redis could not say (restarting)."""
    try:
        return bool(client.sismember(store.keys.runners, worker))
    except Exception:  # Redis restarting: the judge skips this kill
        return None


def run(plan: Plan, disturb: bool, undisturbed_s: float | None = None, seed: int = 0, log=print) -> dict:
    """One soak: the main job, undisturbed or under the plan's disturbances (placed at
    fractions of undisturbed_s). Returns the outcomes, the disturbances done and the samples."""
    from bpt.workers.app import make_app

    rng = random.Random(seed)
    log_dir = tempfile.mkdtemp(prefix="bpt-chaos-")
    disturbances: list[dict] = []
    skew = SKEW if disturb and shutil.which("faketime") else None
    hosts = None if NetHosts.unavailable() else NetHosts(WORKERS + plan.max_kills + 1).__enter__()
    bind = ("--bind", " ".join(["127.0.0.1", *hosts.gateways()]), "--protected-mode", "no") if hosts else ()
    with contextlib.ExitStack() as stack:
        if hosts is not None:
            stack.callback(hosts.close)
        server = stack.enter_context(PrivateRedis(appendonly=True, extra=bind))
        settings = Settings(redis_url=server.url, workers=WORKERS * PROCESSES, visibility_timeout=VISIBILITY_TIMEOUT,
                            poll_seconds=0.1)
        fleet = Fleet(settings, log_dir, hosts, server.port)
        app = make_app(settings)
        sampler = Sampler(server.url, fleet)
        try:
            names = [fleet.start(skew if i == WORKERS - 1 else None) for i in range(WORKERS)]
            wait_ready(app, names)
            client = connect(server.url)
            add_finished_jobs(client, FINISHED_JOBS)
            began = time.monotonic()
            side = recovering = None
            if disturb:  # first, so that it trains a little before it is cancelled
                side = submit_job(app, client, settings, "side", job_choices(5000, 40))
                recovering = RecoveryCases(app, client, settings)
            spec, store = submit_job(app, client, settings, "soak", job_choices(plan.samples, plan.epochs))
            sampler.start()
            at = lambda share: began + share * (undisturbed_s or 60.0)  # noqa: E731
            pending = sorted([(at(0.2), "redis-restart"), (at(0.3), "cancel-resubmit"), (at(0.4), "freeze"),
                              (at(0.6), "redis-crash")] + ([(at(0.5), "partition")] if hosts else [])
                             ) if disturb else []
            cut, healed = None, None
            next_kill = began + rng.uniform(*plan.kill_every) if disturb else float("inf")
            kills, thawed, deadline = 0, None, began + 3 * (undisturbed_s or 600.0) + 180
            frozen, open_s = None, None
            while time.monotonic() < deadline:
                try:
                    status = store.status()
                    if open_s is None and status not in lifecycle.OPEN:  # finishing: no worker-lost any more
                        open_s = round(time.monotonic() - began, 1)
                    if status in FINISHED:
                        break
                except Exception:
                    pass  # Redis restarting
                now = time.monotonic()
                if recovering is not None and now - began >= FINISHER_STOPPED_S:
                    recovering.finisher_returns(server.url)
                if healed is not None and now >= healed:
                    hosts.heal(fleet.host_of[cut])
                    disturbances.append({"t": round(now - began, 1), "what": f"link up {cut}"})
                    cut, healed = None, None
                if thawed is not None and now >= thawed:
                    fleet.signal(frozen, signal.SIGCONT)
                    disturbances.append({"t": round(now - began, 1), "what": f"SIGCONT {frozen}"})
                    frozen, thawed = None, None
                if pending and now >= pending[0][0]:
                    _, what = pending.pop(0)
                    detail = _disturb(what, server, fleet, app, client, settings, side, plan, rng, frozen)
                    if what == "freeze":
                        frozen, thawed = detail, now + plan.frozen_seconds
                    if what == "partition":
                        cut, healed = detail, now + plan.partition_seconds
                    if what == "cancel-resubmit":
                        side = detail
                    shown = ({k: v for k, v in detail.items() if k != "resubmitted"} if isinstance(detail, dict)
                             else detail)
                    disturbances.append({"t": round(now - began, 1), "what": what, "detail": str(shown)})
                    log(f"  {now - began:6.1f}s {what} {shown}")
                if now >= next_kill and kills < plan.max_kills:
                    victims = [n for n in fleet.procs if n not in (frozen, fleet.skewed, cut)]
                    victim = rng.choice(victims)
                    took = took_a_task(client, store, victim)
                    fleet.kill(victim)
                    born = fleet.start()
                    kills += 1
                    disturbances.append({"t": round(now - began, 1), "what": "kill -9", "detail": f"{victim} -> {born}",
                                         "took_main_task": took})
                    log(f"  {now - began:6.1f}s kill -9 {victim}, started {born}")
                    next_kill = now + rng.uniform(*plan.kill_every)
                time.sleep(0.1)
            wall = time.monotonic() - began
            if frozen is not None:
                fleet.signal(frozen, signal.SIGCONT)
            if cut is not None:  # the job ended first: the link comes back when due all the same
                time.sleep(max(0.0, healed - time.monotonic()))
                hosts.heal(fleet.host_of[cut])
                disturbances.append({"t": round(time.monotonic() - began, 1), "what": f"link up {cut}",
                                     "detail": "after the main job ended"})
            client = connect(server.url)
            result = {"main": {**outcome(spec, JobStore(client, spec.job_id), wall),
                               "open_s": open_s if open_s is not None else round(wall, 1)},
                      "disturbances": disturbances}
            if recovering is not None:
                while time.monotonic() - began < FINISHER_STOPPED_S:
                    time.sleep(0.5)
                recovering.finisher_returns(server.url)
                result["recovery"] = recovering.outcomes(client, deadline)
            if isinstance(side, dict):
                result["side"] = _side_outcome(client, side, deadline)
            elif side is not None:
                result["side"] = {"cancelled_status": "not cancelled: the main job ended first"}
            sampler.done.set()
            sampler.join(5)
            result["samples"] = sampler.samples
            result["skewed_worker"] = fleet.skewed
            result["heartbeat_timeout"] = settings.heartbeat_timeout  # the workers' (worker_env passes it on)
            result["hosts"] = NetHosts.unavailable() or f"each worker in a network namespace of its own ({hosts.count})"
            return result
        finally:
            sampler.done.set()
            fleet.stop()
            app.close()
            shutil.rmtree(log_dir, ignore_errors=True)


def _disturb(what, server, fleet, app, client, settings, side, plan, rng, frozen):
    if what == "redis-restart":
        server.restart(down_seconds=2)
        return "SIGTERM, down 2 s"
    if what == "redis-crash":
        server.restart(down_seconds=2, crash=True)
        return "SIGKILL, down 2 s"
    if what == "freeze":
        victim = rng.choice([n for n in fleet.procs if n != fleet.skewed])
        fleet.signal(victim, signal.SIGSTOP)
        return victim
    if what == "partition":  # a worker's host cut off: it lives on, Redis cannot hear it
        victim = rng.choice([n for n in fleet.procs if n not in (fleet.skewed, frozen)])
        fleet.hosts.cut(fleet.host_of[victim])
        return victim
    if what == "cancel-resubmit":
        client = connect(server.url)  # a fresh one: Redis may have restarted under the old
        cancelled_spec, cancelled = side
        cancelled = JobStore(client, cancelled.job_id)
        cancelled.cancel()
        cancelled.log("cancelled")
        cancelled.drop_staged_data()
        version = int(client.hget(cancelled.keys.weights, "version") or 0)
        spec, store = submit_job(app, client, settings, "side-again", job_choices(5000, 4))
        return {"cancelled": cancelled_spec.job_id, "version_at_cancel": version, "resubmitted": (spec, store)}
    raise ValueError(what)


def _side_outcome(client, side, deadline) -> dict:
    """The side job: cancelled midway (its version must not move after the cancel) and
    resubmitted (the new one must complete)."""
    spec, store = side["resubmitted"]
    began = time.monotonic()
    while JobStore(client, spec.job_id).status() not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.2)
    cancelled = JobStore(client, side["cancelled"])
    return {"cancelled_status": cancelled.status(), "cancelled_error": cancelled.state().get("error"),
            "version_at_cancel": side["version_at_cancel"],
            "version_after": int(client.hget(cancelled.keys.weights, "version") or 0),
            "resubmitted": outcome(spec, JobStore(client, spec.job_id), time.monotonic() - began)}


def flat(samples: list[dict], field: str) -> dict:
    """The field's peak in the first and the last third of the run: flat if the last is not
    far above the first."""
    if len(samples) < 6:
        return {"first": None, "last": None}
    third = len(samples) // 3
    return {"first": round(max(s[field] for s in samples[:third]), 1),
            "last": round(max(s[field] for s in samples[-third:]), 1)}


def soak(plan: Plan, log=print) -> dict:
    log("undisturbed run")
    calm = run(plan, disturb=False, log=log)
    log(f"  {calm['main']['wall_s']} s, accuracy {calm['main']['test_accuracy']:.4f}")
    log("chaos run")
    chaos = run(plan, disturb=True, undisturbed_s=calm["main"]["wall_s"], log=log)
    report = {"plan": dataclasses.asdict(plan), "undisturbed": calm, "chaos": chaos}
    for name, r in (("undisturbed", calm), ("chaos", chaos)):
        r["flat"] = {f: flat(r["samples"], f) for f in ("keys", "redis_mb", "workers_mb")}
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="The 2-minute version the test suite runs.")
    parser.add_argument("--containers", action="store_true",
                        help="Container mode: worker containers (docker-compose --scale worker=4), a worker killed, "
                             "one cut off its network for 60 s, one paused, Redis restarted (benchmarks/containers.py).")
    args = parser.parse_args(argv)
    if args.containers:
        from . import containers

        report = containers.main()
        if report:
            rows = [{"run": name, **{k: report[name][k] for k in ("status", "wall_s", "test_accuracy", "outcomes",
                                                                 "subsets", "version", "accepted", "rejected",
                                                                 "duplicates")}} for name in ("undisturbed", "chaos")]
            print(table(rows, list(rows[0])))
            for d in report["chaos"]["faults"]:
                print(f"  {d['t']:7.1f}s  {d['what']}")
            print(write_json("chaos-containers", report))
        return
    report = soak(SHORT if args.short else FULL)
    rows = []
    for name in ("undisturbed", "chaos"):
        main_ = report[name]["main"]
        fl = report[name]["flat"]
        rows.append({"run": name, **{k: main_[k] for k in ("status", "wall_s", "test_accuracy", "outcomes", "subsets",
                                                          "version", "accepted", "rejected", "duplicates", "lost",
                                                          "resent", "reassigned")},
                     "keys first/last third": f"{fl['keys']['first']}/{fl['keys']['last']}",
                     "redis MB": f"{fl['redis_mb']['first']}/{fl['redis_mb']['last']}",
                     "workers MB": f"{fl['workers_mb']['first']}/{fl['workers_mb']['last']}"})
    print(table(rows, list(rows[0])))
    for name in ("undisturbed", "chaos"):
        if report[name]["main"]["error"]:
            print(f"{name}: {report[name]['main']['error']}")
    side = report["chaos"].get("side")
    if side and "version_at_cancel" in side:
        print(f"side job: cancelled midway -> {side['cancelled_status']}, version {side['version_at_cancel']} at the "
              f"cancel and {side['version_after']} after; resubmitted -> {side['resubmitted']['status']} "
              f"({side['resubmitted']['test_accuracy']})")
    for d in report["chaos"]["disturbances"]:
        print(f"  {d['t']:7.1f}s  {d['what']}  {d.get('detail', '')}")
    print(write_json("chaos-short" if args.short else "chaos", report))


if __name__ == "__main__":
    main()
