"""Shared by the benchmarks: a local bpt cluster, a table printer, and a JSON writer that
records the machine and commit the figures were measured on."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import time

from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis

RESULTS = os.path.join(os.path.dirname(__file__), "results")


@contextlib.contextmanager
def local_cluster(workers: int, slowdowns=None, poll_seconds: float = 0.05, **settings_fields):
    """A private Redis server and `workers` local worker processes: (settings, app, client).
    settings_fields: other Settings fields (a broker_url, a visibility_timeout)."""
    from bpt.workers.app import make_app
    from bpt.workers.launcher import LocalWorkers

    with PrivateRedis() as server:
        settings = dataclasses.replace(Settings(), redis_url=server.url, workers=workers, poll_seconds=poll_seconds,
                                       **settings_fields)
        with LocalWorkers(settings, workers, slowdowns=slowdowns):
            app = make_app(settings)
            try:
                yield settings, app, connect(server.url)
            finally:
                app.close()


def run_bpt_job(settings, app, client, spec, data, weights) -> dict:
    """Submit a prepared job, wait for it, return its summarised metrics."""
    from bpt.workers.submit import submit
    from bpt.cli.follow import result_metrics

    store = submit(app, client, settings, spec, data, weights)
    while store.status() not in FINISHED:
        time.sleep(0.05)
    return result_metrics(store)


def median_staleness(histogram: dict[int, int]) -> int | None:
    """The median staleness of a job's pushes from its histogram (staleness -> pushes; the
    upper median of an even count), None before any push."""
    total, seen = sum(histogram.values()), 0
    for staleness, count in sorted(histogram.items()):
        seen += count
        if seen * 2 > total:
            return staleness
    return None


def machine() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def write_json(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump({"machine": machine(), **payload}, f, indent=2)
    return path
