"""The weight store's invariants, each against a real Redis server: one contract suite, two
backends (the `store` fixture): the weights as one blob in the job's Redis, and sharded over
a real 3-node Redis Cluster (`--weights-url`) with the manifest in the job's Redis. Among
them, a merge rule's state kept with the weights (bpt.train.rule_step): the state a push's
step reads is its version's, the new state is installed by the same compare-and-set as the
new weights, a pull never sees one version's weights with another's state, and a checkpoint
carries it."""

import json
import threading

import numpy as np
import pytest

from bpt.broker import checkpoint, codec
from bpt.broker.connection import connect
from bpt.broker.job_store import JobStore
from bpt.data.datasets import DatasetSpec
from bpt.data.prepare import JobChoices, prepare
from bpt.train import rule_step
from bpt.train.merge import MergeRule
from bpt.train.noise_scale import GradStats
from bpt.broker.weight_shards import open_shards
from bpt.broker.weight_store import WeightStore

N = 1000  # floats per tensor
PLAIN = MergeRule("async", alpha=1.0, gamma=1.0, s_max=10**9)


def ones():
    return {"w": np.ones(N, np.float32), "b": np.ones(3, np.float32)}


def zeros():
    return {"w": np.zeros(N, np.float32), "b": np.zeros(3, np.float32)}


def total(weights):
    return float(sum(v.sum(dtype=np.float64) for v in weights.values()))


@pytest.fixture(params=["redis", "cluster"])
def store(request, client, job_id):
    shards = open_shards(request.getfixturevalue("redis_cluster_url"), 3, 60) if request.param == "cluster" else None
    s = WeightStore(client, job_id, shards=shards)
    s.initialize(zeros())
    yield s
    if shards is not None:
        shards.delete_job(job_id)
        shards.close()


def own_store(store, redis_url):
    """Another process's view of the same job: its own connections to both servers."""
    shards = open_shards(_cluster_url(store), 3, 60) if store.shards else None
    return WeightStore(connect(redis_url), store.keys.job_id, shards=shards)


def _cluster_url(store):
    node = store.shards.client.get_default_node()
    return f"redis://{node.host}:{node.port}/0"


def push(store, pulled_version, epoch, subset, rule=PLAIN, delta=None, accuracy=0.9):
    return store.push(rule=rule, pulled_version=pulled_version, delta=delta or ones(), accuracy=accuracy,
                      epoch=epoch, wave=0, subset=subset)


def pull_while_pushing(pull_loop, pullers: int, push_loop, pushers: int, stop: threading.Event) -> None:
    """Run pull_loop() in `pullers` threads while push_loop(p) runs in `pushers` threads; set
    `stop` for the pullers once every pusher is done."""
    pulling = [threading.Thread(target=pull_loop) for _ in range(pullers)]
    pushing = [threading.Thread(target=push_loop, args=(p,)) for p in range(pushers)]
    for t in pulling + pushing:
        t.start()
    for t in pushing:
        t.join()
    stop.set()
    for t in pulling:
        t.join()


def test_pull_returns_initial_version(store):
    pulled = store.pull()
    assert pulled.version == 0 and total(pulled.weights) == 0


def test_concurrent_pushers_version_grows_by_exactly_one_per_push(redis_url, store):
    """16 pushers x 500 pushes (x 150 on the cluster, whose pushes cost 5 more round trips:
    the 2-core suite's time): version 8000 (2400) and every delta counted exactly once."""
    pushers, each = 16, 500 if store.shards is None else 150
    errors = []

    def run(p):
        own = own_store(store, redis_url)
        try:
            for i in range(each):
                result = push(own, own.version(), epoch=p, subset=i)
                assert result.status == "accepted"
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(pushers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = store.pull()
    assert final.version == pushers * each
    assert total(final.weights) == pushers * each * (N + 3)
    assert store.client.hget(store.keys.state, "accepted") == str(pushers * each).encode()


def test_concurrent_puller_never_sees_a_mix_of_versions(redis_url, store):
    """Every pushed delta is all ones, so version v must hold exactly v * (N + 3) in total."""
    stop = threading.Event()
    seen, torn = [], []

    def pull_loop():
        own = own_store(store, redis_url)
        while not stop.is_set():
            p = own.pull()  # verifies the per-version checksum too
            seen.append(p.version)
            if total(p.weights) != p.version * (N + 3):
                torn.append(p.version)

    def push_loop(p):
        own = own_store(store, redis_url)
        for i in range(150):
            push(own, own.version(), epoch=p, subset=i)

    pull_while_pushing(pull_loop, 4, push_loop, 4, stop)
    assert not torn
    assert len(set(seen)) > 10  # the pullers really ran while versions moved
    assert store.pull().version == 600


def test_duplicate_delivery_changes_nothing(store):
    first = push(store, 0, epoch=3, subset=7)
    again = push(store, 0, epoch=3, subset=7)
    assert (first.status, again.status) == ("accepted", "duplicate")
    pulled = store.pull()
    assert pulled.version == 1 and total(pulled.weights) == N + 3
    assert store.client.hget(store.keys.state, "duplicates") == b"1"
    assert push(store, 1, epoch=4, subset=7).status == "accepted"  # same subset, next epoch


def test_too_stale_push_is_rejected_and_counted(store):
    rule = MergeRule("agwu", alpha=1.0, gamma=0.5, s_max=2)
    for i in range(3):
        push(store, store.version(), epoch=0, subset=i, rule=rule)
    before = store.pull()
    result = push(store, 0, epoch=0, subset=99, rule=rule)  # staleness 3 > 2
    assert result.status == "rejected" and result.staleness == 3
    after = store.pull()
    assert after.version == before.version and total(after.weights) == total(before.weights)
    assert store.client.hget(store.keys.state, "rejected") == b"1"
    assert push(store, 0, epoch=0, subset=99, rule=rule).status == "duplicate"


def test_agwu_damps_a_stale_push_by_gamma_to_the_staleness(store):
    rule = MergeRule("agwu", alpha=1.0, gamma=0.5, s_max=8)
    push(store, 0, epoch=0, subset=0, rule=rule, accuracy=0.8)  # fresh: scale 1 * q(=1, no history)
    result = push(store, 0, epoch=0, subset=1, rule=rule, accuracy=0.8)  # staleness 1, q = 0.8/0.8
    assert result.staleness == 1 and result.scale == pytest.approx(0.5)
    np.testing.assert_allclose(store.pull().weights["w"], 1.5)
    assert store.client.hgetall(store.keys.staleness) == {b"0": b"1", b"1": b"1"}


@pytest.mark.parametrize("delta", [
    {"w": np.full(N, np.nan, np.float32), "b": np.ones(3, np.float32)},
    {"w": np.ones(N + 1, np.float32), "b": np.ones(3, np.float32)},
    {"w": np.ones(N, np.float32)},
])
def test_nan_or_misshapen_delta_is_refused_and_weights_untouched(store, delta):
    result = push(store, 0, epoch=0, subset=0, delta=delta)
    assert result.status == "invalid"
    pulled = store.pull()
    assert pulled.version == 0 and total(pulled.weights) == 0
    assert store.client.hget(store.keys.state, "invalid") == b"1"


def test_sync_round_merges_once_into_one_version(store):
    rule = MergeRule("sync")
    for subset, value in ((0, 1.0), (1, 3.0)):
        delta = {"w": np.full(N, value, np.float32), "b": np.zeros(3, np.float32)}
        assert store.stage(delta=delta, samples=10, accuracy=0.5, epoch=0, wave=0, subset=subset).status == "accepted"
    assert store.pull().version == 0  # nothing applied before the round is merged
    first = store.commit_round(rule=rule, epoch=0, wave=0)
    again = store.commit_round(rule=rule, epoch=0, wave=0)
    assert (first.status, again.status) == ("accepted", "duplicate")
    pulled = store.pull()
    assert pulled.version == 1
    np.testing.assert_allclose(pulled.weights["w"], 2.0)  # equal q and n: the mean delta


def test_a_sync_round_of_only_invalid_deltas_commits_with_the_weights_untouched(store):
    """Issue 26, finding 7: such a round failed the job (`sync_merge needs one sample count
    and one q per delta`), though invalid deltas are refused with the weights untouched."""
    for subset in (0, 1):
        bad = {"w": np.full(N, np.nan, np.float32), "b": np.zeros(3, np.float32)}
        assert store.stage(delta=bad, samples=10, accuracy=0.5, epoch=0, wave=0, subset=subset).status == "invalid"
    result = store.commit_round(rule=MergeRule("sync"), epoch=0, wave=0)
    assert result.status == "accepted"
    pulled = store.pull()
    assert pulled.version == 1 and total(pulled.weights) == 0


def test_concurrent_pushers_take_turns_and_never_upload_twice(redis_url, store):
    """With the merge lease, a push's one merge and upload is the one installed."""
    rounds, errors = [], []

    def run(p):
        own = own_store(store, redis_url)
        try:
            for i in range(40):
                rounds.append(push(own, own.version(), epoch=p, subset=i).cas_rounds)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(rounds) == 320
    assert max(rounds) == 1
    assert store.pull().version == 320
    assert not store.client.exists(store.keys.merge_lease)  # every lease given back


def test_a_lease_left_by_a_dead_pusher_only_delays_the_next_push(store):
    store.client.set(store.keys.merge_lease, "a-pusher-that-died", px=300)
    result = push(store, 0, epoch=0, subset=0)
    assert result.status == "accepted" and result.version == 1
    assert not store.client.exists(store.keys.merge_lease)


def test_a_refused_push_gives_the_lease_back(store):
    strict = MergeRule("agwu", alpha=1.0, gamma=0.5, s_max=0)
    push(store, 0, epoch=0, subset=0)
    assert push(store, 0, epoch=0, subset=1, rule=strict).status == "rejected"  # staleness 1 > 0
    assert not store.client.exists(store.keys.merge_lease)


def test_a_push_from_a_version_the_store_lost_is_refused_as_lost_and_records_nothing(store):
    """After a Redis rollback a worker may hold a pull newer than the store's version: its
    staleness would be negative. The push is refused as lost (not a crash, not a counted
    refusal), so the same subset can be trained again and pushed."""
    push(store, 0, epoch=0, subset=0)
    lost = push(store, 3, epoch=0, subset=1)  # pulled version 3; the store is at 1
    assert (lost.status, lost.version, lost.staleness) == ("lost", 1, -2)
    assert store.pull().version == 1 and not store.is_applied(0, 1)
    state = store.client.hgetall(store.keys.state)
    assert b"rejected" not in state and b"invalid" not in state
    assert not store.client.exists(store.keys.merge_lease)
    assert push(store, 1, epoch=0, subset=1).status == "accepted"  # trained again from version 1


def test_a_sharded_pull_that_finds_a_shard_retired_reads_the_newer_version(redis_url, client, job_id, redis_cluster_url,
                                                                           monkeypatch):
    """Retired shards are deleted at the next install here (the product keeps them 10 s).
    A pull whose version is replaced, and its shards deleted, between reading the manifest
    and fetching them must read the newer manifest and come back whole; under 4 pullers
    racing 300 pushes no pull is torn; and what is left on the cluster is exactly the
    current version's shards."""
    from bpt.plan import sharding
    from bpt.broker import weight_shards

    monkeypatch.setattr(weight_shards, "RETIRED_SECONDS", 0.0)
    store = WeightStore(client, job_id, shards=open_shards(redis_cluster_url, 3, 60))
    store.initialize(zeros())
    push(store, 0, epoch=0, subset=0)
    real_fetch, missing, raced = weight_shards.ShardStore.fetch, [], []

    def fetch_after_a_push(self, manifest):
        if not raced:  # the reader's first fetch: another pusher replaces this version first
            raced.append(1)
            push(store, store.version(), epoch=0, subset=1)
        try:
            return real_fetch(self, manifest)
        except weight_shards.ShardMissing:
            missing.append(1)
            raise

    monkeypatch.setattr(weight_shards.ShardStore, "fetch", fetch_after_a_push)
    reader = own_store(store, redis_url)
    pulled = reader.pull()
    monkeypatch.setattr(weight_shards.ShardStore, "fetch", real_fetch)
    assert missing == [1] and pulled.version == 2 and total(pulled.weights) == 2 * (N + 3)

    torn, stop = [], threading.Event()

    def pull_loop():
        own = own_store(store, redis_url)
        while not stop.is_set():
            p = own.pull()
            if total(p.weights) != p.version * (N + 3):
                torn.append(p.version)

    pullers = [threading.Thread(target=pull_loop) for _ in range(4)]
    for t in pullers:
        t.start()
    for i in range(2, 300):
        push(store, store.version(), epoch=0, subset=i)
    stop.set()
    for t in pullers:
        t.join()
    current = {s["key"].encode() for s in sharding.decode_manifest(client.get(store.keys.weights_blob))}
    on_cluster = {k for node in store.shards.client.get_primaries()
                  for k in node.redis_connection.scan_iter(match=f"*{{{job_id}/*")}
    listed = client.zcard(store.keys.shard_uploads) + client.zcard(store.keys.shard_retired)
    store.shards.delete_job(job_id)
    assert not torn
    assert on_cluster == current and listed == 0  # 300 versions written, one left, nothing leaked


# -- a merge rule with state (bpt.train.rule_step) ---------------------------------------------
COUNTING = MergeRule("adascale", alpha=1.0, s_max=10**9)


@pytest.fixture
def counting_rule(monkeypatch):
    """The stateful rule under test counts the pushes its state has seen and applies each
    delta in full: a lost or doubled state update shows as a count other than the version."""
    def count(rule, state, push):
        return {"pushes": state.get("pushes", 0) + 1}, 1.0
    monkeypatch.setitem(rule_step.STEPS, "adascale", count)


@pytest.mark.parametrize("leased", [True, False], ids=["lease", "compare-and-set only"])
def test_concurrent_pushers_never_lose_a_state_update_and_pulls_never_mix_versions(redis_url, store, counting_rule,
                                                                                     leased, monkeypatch):
    """Pushers that take turns by the lease, and pushers without it (a lease given up on:
    the compare-and-set alone decides, and a loser merges again from the newer state), each
    pushing from the weights it pulled (`base`), as workers do."""
    if not leased:
        monkeypatch.setattr(WeightStore, "_take_lease", lambda self, token: False)
    pushers, each = 8, 60 if store.shards is None else 25
    errors, torn, seen, rounds, stop = [], [], [], [], threading.Event()

    def push_loop(p):
        own = own_store(store, redis_url)
        try:
            for i in range(each):
                base = own.pull()
                result = own.push(rule=COUNTING, pulled_version=base.version, delta=ones(), accuracy=0.9,
                                  epoch=p, wave=0, subset=i, base=base)
                assert result.status == "accepted"
                rounds.append(result.cas_rounds)
        except Exception as e:  # surfaced below
            errors.append(e)

    def pull_loop():
        try:
            own = own_store(store, redis_url)
            while not stop.is_set():
                pulled = own.pull()
                seen.append(pulled.version)
                if pulled.rule_state.get("pushes", 0) != pulled.version or \
                        total(pulled.weights) != pulled.version * (N + 3):
                    torn.append((pulled.version, pulled.rule_state))
        except Exception as e:  # surfaced below
            errors.append(e)

    pull_while_pushing(pull_loop, 2, push_loop, pushers, stop)
    assert not errors and not torn and len(set(seen)) > 5
    final = store.pull()
    assert final.version == pushers * each and final.rule_state == {"pushes": pushers * each}
    if not leased:
        assert max(rounds) > 1  # some pushes lost the compare-and-set and merged again on a newer state


def test_adascale_through_the_store_is_the_pure_step_and_a_refused_push_keeps_its_state(store):
    rule = MergeRule("adascale", s_max=1)
    expected, version = {}, 0
    for i, noise in enumerate([100.0, 300.0, 50.0]):
        stats = GradStats(2, 16, 1.0 + noise / 16, 1.0 + noise / 32)
        result = store.push(rule=rule, pulled_version=version, delta=ones(), accuracy=0.9, epoch=0, wave=0, subset=i,
                            live=4, stats=stats, base=store.pull())
        expected, scale = rule_step.step(rule, expected, rule_step.Push(0, 1.0, 4, 1.0, stats))
        assert result.status == "accepted" and result.scale == pytest.approx(scale)
        version = result.version
        assert store.pull().rule_state == pytest.approx(expected)
    refused = store.push(rule=rule, pulled_version=0, delta=ones(), accuracy=0.9, epoch=0, wave=0, subset=9, live=4,
                         stats=GradStats(2, 16, 99.0, 1.0))
    assert refused.status == "rejected" and store.pull().rule_state == pytest.approx(expected)
    assert expected["gain"] > 1


def test_a_checkpoint_carries_the_rule_state_to_a_new_server(client, job_id, counting_rule):
    """On the single-blob backend (a sharded job's checkpoint reads the same hash field in the
    same transaction); a checkpoint written before rule states were kept has none."""
    spec, data, weights = prepare(JobChoices(DatasetSpec("digits"), epochs=1), job_id=job_id)
    store = JobStore.create(client, spec, data, weights, max_staged_bytes=2**30)
    store.mark_running()
    ws = WeightStore(client, job_id)
    delta = {n: np.zeros_like(w) for n, w in weights.items()}
    for subset in range(3):
        assert ws.push(rule=COUNTING, pulled_version=ws.version(), delta=delta, accuracy=0.9, epoch=0, wave=0,
                       subset=subset).status == "accepted"
    ckpt = checkpoint.from_bytes(checkpoint.to_bytes(checkpoint.read(store)))
    assert ckpt.version == 3 and rule_step.decode(ckpt.rule_state) == {"pushes": 3}
    store.delete()
    checkpoint.restore(client, ckpt, data, max_staged_bytes=2**30)
    assert WeightStore(client, job_id).pull().rule_state == {"pushes": 3}
    JobStore(client, job_id).delete()
    blob = checkpoint.to_bytes(ckpt)
    meta = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")])["__metadata__"]
    document = json.loads(meta["bpt_checkpoint"])
    for older_form in ("missing", None):  # as written before rule states were kept; a null
        if older_form == "missing":
            document.pop("rule_state", None)
        else:
            document["rule_state"] = None
        older = codec.encode_weights(codec.decode_weights(blob), metadata={**meta, "bpt_checkpoint": json.dumps(document)})
        restored = checkpoint.from_bytes(older)
        assert restored.rule_state == "" and restored.version == 3
        checkpoint.restore(client, restored, data, max_staged_bytes=2**30)
        assert WeightStore(client, job_id).pull().rule_state == {}
        JobStore(client, job_id).delete()
