"""The chaos soak's jobs (benchmarks/chaos.py): how they are submitted and judged, and the
reconciler's cases of issue 26 that run beside the main job (a sync-rule job, a queued job
whose messages were lost, a job whose finisher stopped holding its claim)."""

from __future__ import annotations

import time

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED, JobStore

WORKERS, PROCESSES = 4, 2
FINISHER_STOPPED_S = 90.0  # the stopped finisher comes back after this and must find its job taken over


def job_choices(samples: int, epochs: int) -> JobChoices:
    return JobChoices(DatasetSpec("digits-aug", samples=samples), epochs=epochs, subset_size=256,
                      workers=WORKERS * PROCESSES, seed=0)


def submit_job(app, client, settings, job_id: str, choices: JobChoices) -> tuple:
    from bpt.workers.submit import submit

    spec, data, weights = prepare(choices, job_id=job_id)
    return spec, submit(app, client, settings, spec, data, weights)


def outcome(spec, store: JobStore, wall: float) -> dict:
    state = store.state()
    applied = store.client.hlen(store.keys.applied)
    events = [e["event"] for e in store.events()]
    return {"job": spec.job_id, "status": state["status"], "wall_s": round(wall, 1),
            "test_accuracy": state.get("test_accuracy"), "outcomes": applied, "subsets": spec.total_tasks,
            "version": state.get("version"), "accepted": state.get("accepted"), "rejected": state.get("rejected"),
            "duplicates": state.get("duplicates"), "lost": events.count("push-lost"),
            "resent": events.count("resent"), "reassigned": events.count("reassigned"),
            # the job keeps the reconciler's lost workers in its state too: its event log holds only the
            # last MAX_EVENTS, and a loaded run's early kills can fall out of it
            "workers_lost": max(events.count("worker-lost"), len(str(state.get("lost_workers") or "").split())),
            "lost_names": sorted(set(str(state.get("lost_workers") or "").split())),
            "events": len(events), "error": state.get("error")}


def add_finished_jobs(client, count: int) -> None:
    """`count` finished jobs in the index (their state only), as a long-lived cluster has."""
    from bpt.broker.keys import JOBS_INDEX, JobKeys

    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.zadd(JOBS_INDEX, {f"old-{i}": i})
        pipe.hset(JobKeys(f"old-{i}").state, mapping={"status": "done", "since": i})
    pipe.execute()


class RecoveryCases:
    """The reconciler's cases, started with the chaos run: a sync-rule job (its rounds must
    each commit once), a queued job whose first messages were lost (it must be sent again),
    and a job whose finisher stopped holding its claim (taken over after the patience; the
    finisher coming back after FINISHER_STOPPED_S must not complete it a second time)."""

    def __init__(self, app, client, settings):
        import secrets

        self.sync_spec, _ = submit_job(app, client, settings, "sync", JobChoices(
            DatasetSpec("digits-aug", samples=4000), epochs=2, subset_size=256, rule="sync",
            workers=WORKERS * PROCESSES, seed=0))
        self.lost_spec = self._staged(client, "lost-messages", start=False)  # submitted, its messages lost
        self.finisher_spec = self._staged(client, "finisher", start=True)
        self.token = secrets.token_hex(8)
        self.claimed = JobStore(client, "finisher").claim_finish(self.token)  # ... and the finisher stops
        self.returned: dict | None = None

    @staticmethod
    def _staged(client, job_id: str, start: bool):
        spec, data, weights = prepare(job_choices(2000, 1), job_id=job_id)
        store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
        if start:
            store.mark_running()
        return spec

    def finisher_returns(self, url: str) -> None:
        """The stopped finisher wakes up: its renewal and its completion must be refused."""
        if self.returned is not None:
            return
        store = JobStore(connect(url), "finisher")
        self.returned = {"renewed": store.renew_claim(self.token),
                         "completed": store.complete(test_accuracy=0.0, reason="a stale finisher")}

    def outcomes(self, client, deadline: float) -> dict:
        ids = ("sync", "lost-messages", "finisher")
        while time.monotonic() < deadline and not all(JobStore(client, j).status() in FINISHED for j in ids):
            time.sleep(0.2)
        out = {}
        for job_id, spec in zip(ids, (self.sync_spec, self.lost_spec, self.finisher_spec)):
            store = JobStore(client, job_id)
            events = [e["event"] for e in store.events()]
            out[job_id] = {**outcome(spec, store, 0.0), "finished_events": events.count("finished"),
                           "taken_over": events.count("finish-taken-over"),
                           "rounds": spec.total_waves}
        out["finisher"].update(claimed=self.claimed, stale_finisher=self.returned)
        return out
