"""The guardrail on the path a push takes in production: the guard's level read from the
job's Redis, the job's rule resolved for the live K and tightened (workers/subnetwork.py
calls guardrail.rule_in_force), merged by the real weight store."""

import numpy as np

from bpt.train import guardrail
from bpt.train.merge import MergeRule
from bpt.broker.job_store import JobStore
from bpt.broker.weight_store import WeightStore


def test_a_tightened_guard_still_accepts_steady_state_staleness_at_live_k_and_only_alpha_shrinks(client, job_id):
    """Issue 23: the old guard halved a bound already resolved to 2K, so at K = 8 level 2
    refused every push of staleness 7 (the steady state). Now level 2 quarters alpha only."""
    jobs, weights = JobStore(client, job_id), WeightStore(client, job_id)
    weights.initialize({"w": np.zeros(4, np.float32)})
    for accuracy in (0.9, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01):  # two confirmed collapses on 10,000 images
        state, _ = jobs.observe_accuracy(accuracy, 0.05, 10_000)
    assert jobs.guard_level() == 2 == state.level
    live = 8
    for v in range(7):  # seven other pushes land first: this one is 7 versions stale
        weights.push(rule=guardrail.rule_in_force(MergeRule(), 0, live), pulled_version=v,
                     delta={"w": np.zeros(4, np.float32)}, accuracy=0.5, epoch=0, wave=0, subset=v, live=live)
    rule = guardrail.rule_in_force(MergeRule(), jobs.guard_level(), live)
    result = weights.push(rule=rule, pulled_version=0, delta={"w": np.ones(4, np.float32)}, accuracy=0.5,
                          epoch=0, wave=0, subset=99, live=live)
    assert result.status == "accepted" and result.staleness == 7
    assert np.allclose(weights.pull().weights["w"], 0.25 / live, rtol=0.01)
