"""The chaos soak's short version (benchmarks/chaos.py --short): the job survives kill -9 of
workers, two Redis restarts (one SIGKILL), a frozen worker, a skewed clock, a cancelled
and resubmitted neighbour and (where network namespaces can be made) a worker's host cut
off for 60 s, trains every subset once and ends as accurate as undisturbed."""

import shutil

import pytest

from benchmarks import chaos
from bpt.workers import reconciler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def report():
    return chaos.soak(chaos.SHORT, log=lambda *_: None)


def test_the_disturbed_job_completes_with_every_subset_applied_once(report):
    main = report["chaos"]["main"]
    assert main["status"] == "done", main
    assert main["outcomes"] == main["subsets"]  # one outcome per (epoch, subset): none twice, none missing
    assert main["version"] == main["accepted"]
    kinds = [d["what"] for d in report["chaos"]["disturbances"]]
    assert kinds.count("kill -9") == chaos.SHORT.max_kills
    assert {"redis-restart", "redis-crash", "freeze", "cancel-resubmit"} <= set(kinds)
    if shutil.which("faketime"):
        assert report["chaos"]["skewed_worker"]
    if report["chaos"]["hosts"].startswith("each worker"):  # else the reason network namespaces were not made
        assert "partition" in kinds and any(k.startswith("link up") for k in kinds)


def test_the_reconciler_reported_the_killed_workers_lost(report):
    """Issue 26: a worker killed mid-job is a worker-lost event in the job it took a task of.
    Which kills those are is read at each kill (`took_main_task`): under a full suite's load
    the early kills landed on workers whose first task of the main job was still running, or
    that had none yet, which is why `workers_lost >= 1` failed there (xfail from 2026-12-02
    until the reconciler counted a task in hand, 2026-12-06)."""
    main = report["chaos"]["main"]
    kills = [d for d in report["chaos"]["disturbances"] if d["what"] == "kill -9"]
    # seen dead only after the heartbeat timeout, by a reconciler that may first take the
    # killed one's lease over; reported only while the job is open (open_s: when it stopped
    # being so, its final evaluation included): a kill later than that may go unreported
    noticed = report["chaos"]["heartbeat_timeout"] + reconciler.LEASE_TTL + 2 * reconciler.INTERVAL
    took = {d["detail"].split(" -> ")[0] for d in kills if d.get("took_main_task") and d["t"] + noticed <= main["open_s"]}
    print(f"killed in time, having taken a task of the main job: {sorted(took)}; reported lost: {main['lost_names']}")
    if not took:
        pytest.skip(f"no kill landed on a worker with a main-job task in time to be noticed: {kills}")
    assert took <= set(main["lost_names"]), (kills, main)


def test_the_disturbed_job_is_as_accurate_as_the_undisturbed_one(report):
    calm, main = report["undisturbed"]["main"], report["chaos"]["main"]
    assert main["test_accuracy"] >= calm["test_accuracy"] - 0.01, (calm, main)


def test_the_cancelled_neighbour_stays_cancelled_and_its_resubmission_completes(report):
    side = report["chaos"]["side"]
    assert side["cancelled_status"] == "cancelled", side
    assert side["version_after"] == side["version_at_cancel"]
    assert side["resubmitted"]["status"] == "done"


def test_redis_keys_and_memory_stay_flat(report):
    for field, slack in (("keys", 1.5), ("redis_mb", 1.5), ("workers_mb", 1.5)):
        fl = report["chaos"]["flat"][field]
        assert fl["last"] <= slack * fl["first"] + 10, (field, fl)


def test_the_reconcilers_cases_end_done_with_nothing_applied_twice(report):
    """Issue 26: a sync job's rounds commit once each; a queued job whose messages were lost
    is sent again and trains; a job whose finisher stopped holding its claim is taken over
    once, and the finisher coming back 90 s later can neither renew nor complete it. All with
    10,000 finished jobs in the index."""
    cases = report["chaos"]["recovery"]
    sync, lost, finisher = cases["sync"], cases["lost-messages"], cases["finisher"]
    assert sync["status"] == "done" and sync["version"] == sync["rounds"], sync
    assert sync["outcomes"] == sync["subsets"]
    assert lost["status"] == "done" and lost["resent"] >= 1 and lost["outcomes"] == lost["subsets"], lost
    assert finisher["claimed"] and finisher["status"] == "done", finisher
    assert finisher["taken_over"] == 1 and finisher["finished_events"] == 1
    assert finisher["stale_finisher"] == {"renewed": False, "completed": False}
