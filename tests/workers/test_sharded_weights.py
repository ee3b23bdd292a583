"""A whole job with its weights sharded over a real 3-node Redis Cluster (`--weights-url`):
real Celery workers, the job's state and manifest in its own Redis, the tensors' bytes on
the cluster's primaries."""

import os
import subprocess
import sys
import time

import pytest

from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.settings import Settings
from bpt.plan import sharding
from bpt.errors import ConfigError
from bpt.broker.connection import connect
from bpt.broker.job_store import FINISHED
from bpt.broker.redis_server import PrivateRedis
from bpt.broker.weight_shards import open_shards
from bpt.broker.weight_store import WeightStore
from bpt.workers.app import make_app
from bpt.workers.launcher import LocalWorkers
from bpt.workers.submit import submit

pytestmark = pytest.mark.slow


def test_a_digits_aug_job_trains_with_its_weights_sharded_over_a_redis_cluster(redis_cluster_url, tmp_path):
    with PrivateRedis() as server:
        settings = Settings(redis_url=server.url, weights_url=redis_cluster_url, workers=2, poll_seconds=0.05)
        with LocalWorkers(settings, 2) as _:
            app = make_app(settings)
            client = connect(server.url)
            spec, data, weights = prepare(JobChoices(DatasetSpec("digits-aug", samples=6000), epochs=4, workers=2),
                                          job_id="sharded-digits")
            store = submit(app, client, settings, spec, data, weights)
            deadline = time.monotonic() + 180
            while store.status() not in FINISHED:
                assert time.monotonic() < deadline, store.state()
                time.sleep(0.1)
            state = store.state()
            manifest = client.get(store.keys.weights_blob)
            app.close()
            shards = open_shards(redis_cluster_url, 3, 60)
            try:
                placed = {shards.client.get_node_from_key(s["key"]).name for s in sharding.decode_manifest(manifest)}
                on_cluster = {k.decode() for node in shards.client.get_primaries()
                              for k in node.redis_connection.scan_iter(match=f"*{{{spec.job_id}/*")}
                waited = subprocess.run([sys.executable, "-m", "bpt.cli", "wait", spec.job_id, "--redis-url", server.url,
                                         "--quiet", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                                        env={**os.environ, "BPT_WEIGHTS_URL": redis_cluster_url})
                with pytest.raises(ConfigError, match="--weights-url"):  # a process not told where the shards are
                    WeightStore(client, spec.job_id, script_table={}).pull()
                gc = subprocess.run([sys.executable, "-m", "bpt.cli", "gc", "--delete-finished", "--json",
                                     "--redis-url", server.url], capture_output=True, text=True, timeout=60,
                                    env={**os.environ, "BPT_WEIGHTS_URL": redis_cluster_url})
                left = shards.delete_job(spec.job_id)
            finally:
                shards.close()
    assert state["status"] == "done", state
    assert float(state["test_accuracy"]) >= 0.9
    applied = int(state["accepted"]) + int(state["rejected"])
    assert applied == spec.total_tasks and int(state["version"]) == int(state["accepted"])
    assert sharding.is_manifest(manifest) and len(manifest) < 2000  # the job's Redis holds no tensor bytes
    assert len(placed) == 3  # LeNet-5's tensors, in 3 shards on the 3 primaries
    assert on_cluster == {s["key"] for s in sharding.decode_manifest(manifest)}  # the job's end swept the rest
    assert waited.returncode == 0, waited.stderr
    assert (tmp_path / "model.safetensors").stat().st_size > 200_000
    assert gc.returncode == 0 and '"jobs_deleted": 1' in gc.stdout, gc.stderr
    assert left == 0  # `bpt gc --delete-finished` deleted its shards on every primary too
