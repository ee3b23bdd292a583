"""A job's checkpoint: its weights and everything needed to carry on from them, read from
Redis in one consistent snapshot, written as one safetensors file, and put back into Redis
(issue 28: `bpt train --resume`).

The file is safetensors (no pickle): the global weights as tensors, the best-validation
weights (when there are some) under `best/`, and in the metadata one JSON document: the
spec, the version, the job's counters, its `applied` record (which subset of which epoch has
an outcome: written by the push script with the version it installs, so read in the same
transaction as the weights the two always agree), the committed sync rounds, evaluations,
the last events and the statistics `bpt status` shows. What to send again is derived from
it by bpt.job.resume.plan.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import redis

from bpt.job import lifecycle
from bpt.job import resume
from bpt.plan import sharding
from bpt.errors import BptError, DataError
from bpt.job.jobspec import JobSpec

from . import codec, recovery
from .job_store import JobStore
from .weight_store import WeightStore

FORMAT = "bpt-checkpoint/1"
KEPT_EVENTS = 500
HASHES = ("staleness", "guard", "gradients", "worker_stats")  # statistics carried over as they are
# State fields that describe the job's end or its current holder: a resumed job starts without them.
NOT_CARRIED = ("status", "since", "finisher", "finish_reason", "error", "reason", "finished", "warning",
               "staged_bytes", "lost_workers", "test_accuracy", "test_loss", "top_k_accuracy")
SNAPSHOT_TRIES = 20


@dataclasses.dataclass
class Checkpoint:
    spec: JobSpec
    version: int
    weights: dict[str, np.ndarray]
    state: dict[str, str]
    applied: dict[str, str]
    committed: list[tuple[int, int]]
    evals: list[str]
    events: list[str]
    hashes: dict[str, dict[str, str]]
    best: dict[str, np.ndarray] | None = None
    rule_state: str = ""  # the merge rule's state at `version` (bpt.train.rule_step), as stored

    @property
    def job_id(self) -> str:
        return self.spec.job_id


# -- reading from Redis -------------------------------------------------------------------------
def _text(mapping) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in mapping.items()}


def read(store: JobStore, shards=None) -> Checkpoint:
    """One consistent snapshot of the job (weights, version and applied record from the same
    transaction; sharded weights pulled and the version checked again)."""
    spec, keys = store.spec(), store.keys
    shape = lifecycle.Shape(spec)
    for _ in range(SNAPSHOT_TRIES):
        epochs = {int(f.decode().split(":", 1)[0]) for f in store.client.hkeys(keys.applied)}
        epochs = sorted(e for e in epochs | {max(epochs, default=-1) + 1} if 0 <= e < spec.epochs)
        rounds = [(e, w) for e in epochs for w in range(len(shape[e]))] if spec.rule.synchronous else []
        pipe = store.client.pipeline(transaction=True)
        pipe.hmget(keys.weights, "version", "rule")
        pipe.get(keys.weights_blob)
        pipe.hgetall(keys.applied)
        pipe.hgetall(keys.state)
        pipe.lrange(keys.evals, 0, -1)
        pipe.lrange(keys.events, -KEPT_EVENTS, -1)
        for name in HASHES:
            pipe.hgetall(getattr(keys, name))
        pipe.get(keys.best_blob)
        for e, w in rounds:
            pipe.exists(keys.round_committed(e, w))
        (version, rule_state), blob, applied, state, evals, events, *rest = pipe.execute()
        hashes = {name: _text(h) for name, h in zip(HASHES, rest)}
        best_blob, flags = rest[len(HASHES)], rest[len(HASHES) + 1:]
        if version is None or blob is None:
            raise DataError(f"job {store.job_id} has no global weights to resume from")
        if sharding.is_manifest(blob):
            pulled = WeightStore(store.client, store.job_id, script_table={}, shards=shards).pull()
            if pulled.version != int(version):
                continue  # a push landed between the two reads: read both again
            weights = pulled.weights
        else:
            weights = codec.decode_weights(blob)
        return Checkpoint(spec, int(version), {n: np.array(a) for n, a in weights.items()}, _text(state),
                          _text(applied), [r for r, f in zip(rounds, flags) if f],
                          [e.decode() for e in evals], [e.decode() for e in events], hashes,
                          {n: np.array(a) for n, a in codec.decode_weights(best_blob).items()} if best_blob else None,
                          (rule_state or b"").decode())
    raise DataError(f"job {store.job_id} moved on in each of {SNAPSHOT_TRIES} tries to read it; try again")


# -- the file ------------------------------------------------------------------------------------
def to_bytes(ckpt: Checkpoint) -> bytes:
    document = {"format": FORMAT, "spec": json.loads(ckpt.spec.to_json()), "version": ckpt.version,
                "state": ckpt.state, "applied": ckpt.applied, "committed": [list(r) for r in ckpt.committed],
                "evals": ckpt.evals, "events": ckpt.events, "hashes": ckpt.hashes, "rule_state": ckpt.rule_state}
    tensors = dict(ckpt.weights)
    for name, array in (ckpt.best or {}).items():
        tensors[f"best/{name}"] = array
    return codec.encode_weights(tensors, metadata={"bpt_checkpoint": json.dumps(document), "job_id": ckpt.job_id,
                                                   "version": str(ckpt.version)})


def from_bytes(blob: bytes, source: str = "checkpoint") -> Checkpoint:
    try:
        length = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8:8 + length]).get("__metadata__") or {}
        document = json.loads(meta["bpt_checkpoint"])
        if document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {FORMAT}")
        tensors = codec.decode_weights(blob)
        spec = JobSpec.from_json(json.dumps(document["spec"]))
        weights = {n: np.array(a) for n, a in tensors.items() if not n.startswith("best/")}
        best = {n[5:]: np.array(a) for n, a in tensors.items() if n.startswith("best/")} or None
        return Checkpoint(spec, int(document["version"]), weights, dict(document["state"]), dict(document["applied"]),
                          [tuple(r) for r in document["committed"]], list(document["evals"]),
                          list(document["events"]), dict(document["hashes"]), best, str(document.get("rule_state") or ""))
    except (KeyError, ValueError, TypeError, AttributeError, UnicodeDecodeError, BptError) as e:
        raise DataError(f"{source} is not a bpt checkpoint ({type(e).__name__}: {e}); a model.safetensors "
                        "starts a new job with --init-from") from e


def write_file(ckpt: Checkpoint, path: str) -> str:
    """Atomically (a temporary file renamed into place): a Ctrl-C mid-write leaves the last one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        f.write(to_bytes(ckpt))
    os.replace(partial, path)
    return path


def read_file(path: str) -> Checkpoint:
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.safetensors")
    if not os.path.isfile(path):
        raise DataError(f"--resume {path!r}: no such checkpoint file (and no such job on the Redis server given)")
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise DataError(f"cannot read checkpoint {path}: {e.strerror}") from e
    return from_bytes(blob, path)


# -- putting it back --------------------------------------------------------------------------------
def restore(client: redis.Redis, ckpt: Checkpoint, data, max_staged_bytes: int, shards=None) -> resume.Plan:
    """Create the job on a server that does not have it, at the checkpoint's version and
    progress, queued; returns the plan of what to send."""
    spec = ckpt.spec
    store = JobStore.create(client, spec, data, ckpt.weights, max_staged_bytes, shards)
    plan = resume.plan(lifecycle.Shape(spec), spec.rule.synchronous, ckpt.applied, None, ckpt.committed)
    keys = store.keys
    done = {(e, s) for (e, _), subsets in plan.done.items() for s in subsets}
    kept = {f: o for f, o in ckpt.applied.items() if tuple(int(p) for p in f.split(":", 1)) in done}
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.weights, "version", ckpt.version)
    if ckpt.rule_state:
        pipe.hset(keys.weights, "rule", ckpt.rule_state)
    state = {k: v for k, v in ckpt.state.items() if k not in NOT_CARRIED}
    state["accepted"] = str(int(float(state.get("accepted", 0))) - sum(o == "staged" for f, o in ckpt.applied.items()
                                                                        if f not in kept))
    if state:
        pipe.hset(keys.state, mapping=state)
    if kept:
        pipe.hset(keys.applied, mapping=kept)
    _write_progress(pipe, keys, plan)
    for e, w in plan.committed:
        pipe.set(keys.round_committed(e, w), 1)
    if ckpt.evals:
        pipe.rpush(keys.evals, *ckpt.evals)
    if ckpt.events:
        pipe.rpush(keys.events, *ckpt.events)
    for name, mapping in ckpt.hashes.items():
        if mapping and name in HASHES:
            pipe.hset(getattr(keys, name), mapping=mapping)
    if ckpt.best:
        pipe.set(keys.best_blob, codec.encode_weights(ckpt.best))
    pipe.execute()
    return plan


def restart(store: JobStore, data, max_staged_bytes: int) -> resume.Plan:
    """Take a failed or cancelled job back on the server that has it: stage its data again,
    move it to queued (the `restart` move: one compare-and-set), and plan from its own
    record. Raises DataError with the reason when the job cannot be resumed."""
    spec = store.spec()
    refusal = resume.resume_refusal(store.status(), store.job_id)
    if refusal:
        raise DataError(refusal)
    applied = [f.decode() for f in store.client.hkeys(store.keys.applied)]
    shape = lifecycle.Shape(spec)
    released = {tuple(int(p) for p in k.decode().rsplit(":", 2)[1:])
                for k in store.client.scan_iter(match=store.keys.released_pattern(), count=1000)}
    committed = {tuple(int(p) for p in k.decode().rsplit(":", 3)[1:3])
                 for k in store.client.scan_iter(match=store.keys.committed_pattern(), count=1000)}
    if spec.rule.synchronous and applied and not committed and not released:
        raise DataError(f"job {store.job_id}'s sync rounds were cleaned by an earlier `bpt gc`; it cannot be resumed "
                        "(start a new job with --init-from its last model)")
    if not released and applied:  # cleaned by a `bpt gc` from before resume existed: derive them again
        released = None
    plan = resume.plan(shape, spec.rule.synchronous, applied, released,
                       committed if spec.rule.synchronous else set())
    store.stage_data(spec, data, max_staged_bytes)
    moved = store.move("restart")
    if not moved.ok:
        raise DataError(resume.resume_refusal(moved.previous, store.job_id) or f"job {store.job_id} moved on")
    pipe = store.client.pipeline(transaction=True)
    pipe.hdel(store.keys.state, *[f for f in NOT_CARRIED if f not in ("status", "since", "staged_bytes")])
    pipe.delete(store.keys.reconciler)  # its stall clock starts again, not from before the job ended
    _write_progress(pipe, store.keys, plan)
    recovery.mark_open(pipe, store.job_id)
    pipe.execute()
    if not spec.data_path and not store.client.exists(store.keys.data("x_train")):
        store.stage_data(spec, data, max_staged_bytes)  # a `bpt gc` freed it between the two
    return plan


def _write_progress(pipe, keys, plan: resume.Plan) -> None:
    """The plan's done sets and release flags, where the push path and the reconciler count
    them (idempotent: SADD and SET)."""
    for (e, w), subsets in plan.done.items():
        pipe.sadd(keys.wave_done(e, w), *subsets)
    for e, w in plan.released:
        pipe.set(keys.wave_released(e, w), 1)

