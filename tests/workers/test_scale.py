"""Scale is tested, not assumed: a real 16-worker job (16 Celery worker processes on this
machine's cores: the staleness a 16-node cluster sees) must still learn."""

import dataclasses
import time

import pytest

from benchmarks.common import median_staleness
from benchmarks.scale_spread import JOB, K
from bpt.data.prepare import prepare
from bpt.train import learning
from bpt.settings import Settings
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.workers.app import make_app
from bpt.workers.launcher import LocalWorkers
from bpt.workers.submit import submit

pytestmark = pytest.mark.slow
# The bar, sized from the job's measured spread (python -m benchmarks.scale_spread, docs/scaling.md):
# 40 runs between 0.9499 and 0.9749, mean 0.9625, standard deviation 0.0063, and 0.947 in CI
# (340 of the 359 test digits). It was 0.95, one run's 0.969 less about 2 points: 1 run in 40
# and that CI run fell below it. 0.94 is 3.5 standard deviations under this machine's mean but
# only 0.7 points under the CI run; a collapse (AGWU ended at 9.2% here) fails it by far.
ACCURACY_BAR = 0.94


@pytest.fixture(scope="module")
def cluster():
    """Its own Redis: the session's two workers must not count toward this job's K."""
    with PrivateRedis() as server:
        settings = dataclasses.replace(Settings(), redis_url=server.url, workers=K, poll_seconds=0.1)
        with LocalWorkers(settings, K) as local:
            app = make_app(settings)
            yield settings, app, connect(server.url), local
            app.close()


def test_sixteen_workers_learn_digits_aug_with_the_default_rule(cluster):
    """The issue's job: digits-aug 20,000 samples, subsets of 256, 4 epochs. The paper's AGWU
    ended at 9.2% here; the bar is below what normalized reaches in 40 runs (ACCURACY_BAR; the
    issue's goal of 98% is not met)."""
    settings, app, client, local = cluster
    spec, data, weights = prepare(JOB)
    assert spec.rule.kind == "normalized" and spec.rule.s_max is None
    store = submit(app, client, settings, spec, data, weights)
    deadline = time.monotonic() + 400
    while store.status() not in FINISHED:
        assert time.monotonic() < deadline, store.state()
        time.sleep(0.2)
    state = store.state()
    assert state["status"] == "done", state
    # No chance or fall verdict; the still-learning one exactly when validation rose past its
    # margin. This job (4 epochs at 16 workers) usually ends still climbing: 7 of 8 runs of
    # benchmarks.scale_spread rose 7.6 to 10.4 points from the first half's best to the last
    # quarter's, and warned, so the warning is expected here, not a failure.
    rose = learning.rise(store.evals())
    assert rose is not None, store.evals()
    assert ("still learning" in state.get("warning", "")) == learning.climbed(rose), (rose, state)
    assert "warning" not in state or "still learning" in state["warning"], state
    assert state["test_accuracy"] >= ACCURACY_BAR, (state, median_staleness(store.staleness_histogram()))
    pushes = [e for e in store.events() if e["event"] == "push-accepted"]
    assert len({e["worker"] for e in pushes}) == K  # every worker trained
    lives = sorted(e["live"] for e in pushes)
    assert lives[len(lives) // 2] == K  # the merge divided by the live count, not the submitter's cores
    # a 16-node cluster's staleness, as the issue measured
    assert 8 <= median_staleness(store.staleness_histogram()) <= 2 * K
