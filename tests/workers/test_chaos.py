"""The chaos soak's short version (benchmarks/chaos.py --short): the job survives kill -9 of
workers, two Redis restarts (one SIGKILL), a frozen worker, a skewed clock and a cancelled
and resubmitted neighbour, trains every subset once and ends as accurate as undisturbed."""

import shutil

import pytest

from benchmarks import chaos

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
