"""What bpt's Prometheus exporter reports, read from Redis at every scrape.

A custom collector (prometheus_client's documented pattern for proxying another system):
nothing is cached between scrapes, so two exporters, or one restarted, report the same
figures, and the exporter holds no state a crash could lose."""

from __future__ import annotations

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from . import clock, worker_registry
from .job_store import JobStore, list_jobs

JOBS_REPORTED = 50  # the newest jobs; older ones stay in `bpt jobs`
STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)
OUTCOMES = ("accepted", "rejected", "invalid", "duplicates")


class BptCollector:
    def __init__(self, client: redis.Redis, heartbeat_timeout: float, queues: tuple[str, ...], queue_depth):
        """queue_depth(name) -> ready messages, read through the broker (Redis or RabbitMQ)."""
        self.client, self.heartbeat_timeout, self.queues = client, heartbeat_timeout, queues
        self.queue_depth = queue_depth

    def collect(self):
        version = GaugeMetricFamily("bpt_job_version", "Global weight version of the job", labels=["job", "status"])
        accuracy = GaugeMetricFamily("bpt_job_test_accuracy", "Latest test accuracy of the job", labels=["job"])
        pushes = CounterMetricFamily("bpt_job_pushes", "Pushes by outcome", labels=["job", "outcome"])
        staleness = HistogramMetricFamily("bpt_job_push_staleness", "Staleness of accepted pushes", labels=["job"])
        for job_id in list_jobs(self.client)[-JOBS_REPORTED:]:
            store = JobStore(self.client, job_id)
            try:
                state = store.state()
            except Exception:  # deleted between the index read and now
                continue
            version.add_metric([job_id, str(state.get("status"))], float(state.get("version", 0) or 0))
            for outcome in OUTCOMES:
                pushes.add_metric([job_id, outcome.rstrip("s") if outcome == "duplicates" else outcome],
                                  float(state.get(outcome, 0) or 0))
            evals = store.evals()
            if evals:
                accuracy.add_metric([job_id], float(evals[-1]["accuracy"]))
            counts = store.staleness_histogram()
            buckets, total = [], 0
            for bound in STALENESS_BUCKETS:
                buckets.append((str(bound), float(sum(n for s, n in counts.items() if s <= bound))))
            buckets.append(("+Inf", float(sum(counts.values()))))
            total = float(sum(s * n for s, n in counts.items()))
            staleness.add_metric([job_id], buckets, total)
        yield from (version, accuracy, pushes, staleness)

        now = clock.now(self.client)
        rate = GaugeMetricFamily("bpt_worker_samples_per_second", "A training process's measured throughput",
                                 labels=["worker", "device"])
        alive = GaugeMetricFamily("bpt_worker_alive", "1 while the worker's heartbeat is fresh", labels=["worker"])
        processes = GaugeMetricFamily("bpt_worker_processes", "Training processes of the worker", labels=["worker"])
        for name, w in worker_registry.workers(self.client).items():
            live = worker_registry.is_alive(w, now, self.heartbeat_timeout)
            alive.add_metric([name], 1.0 if live else 0.0)
            processes.add_metric([name], float(w["processes"]))
            if w["rate"]:
                rate.add_metric([name, w["device"]], float(w["rate"]))
        yield from (rate, alive, processes)

        depth = GaugeMetricFamily("bpt_queue_depth", "Task messages waiting in a broker queue", labels=["queue"])
        for queue in self.queues:
            depth.add_metric([queue], float(self.queue_depth(queue)))
        yield depth
