"""Versioned global weights in Redis, pulled and pushed without locks.

Pull is one HMGET of (version, blob, crc): a single command, so it can never mix two
versions. Push reads the newest version, merges the subnetwork's delta into it locally
and installs the result with push.lua only if the version has not moved meanwhile
(compare-and-set); otherwise it merges again on top of the newer weights. No lock is held
across a round trip, and the same script records the push as applied for its (epoch,
subset), so a redelivered task can never be merged twice.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from bpt import merge
from bpt.errors import CorruptBlob

from . import codec, scripts
from .keys import JobKeys, applied_field

RECENT_ACCURACIES = 16
MAX_CAS_ROUNDS = 1000


@dataclasses.dataclass(frozen=True)
class Pulled:
    version: int
    weights: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class PushResult:
    status: str  # accepted | rejected | invalid | duplicate
    version: int  # global version after the push (accepted) or when it was refused
    staleness: int
    scale: float  # the contribution applied to the delta (0 when refused)
    done: int  # subsets finished in this wave, this one included
    weights: dict[str, np.ndarray] | None = None  # the new global weights, when accepted
    cas_rounds: int = 1


class WeightStore:
    def __init__(self, client, job_id: str, script_table: dict | None = None):
        self.client = client
        self.keys = JobKeys(job_id)
        self.scripts = script_table or scripts.register(client)

    # -- setting and reading ---------------------------------------------------------
    def initialize(self, weights: dict[str, np.ndarray], pipe=None) -> None:
        blob = codec.encode_weights(weights)
        (pipe or self.client).hset(self.keys.weights, mapping={"version": 0, "blob": blob, "crc": codec.checksum(blob)})

    def pull(self) -> Pulled:
        version, blob, crc = self.client.hmget(self.keys.weights, "version", "blob", "crc")
        return self._decode(version, blob, crc)

    def version(self) -> int:
        raw = self.client.hget(self.keys.weights, "version")
        if raw is None:
            raise CorruptBlob(f"job {self.keys.job_id} has no global weights")
        return int(raw)

    def _snapshot(self) -> tuple[Pulled, list[float]]:
        """The newest weights and the recent accepted accuracies, read atomically."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(self.keys.weights, "version", "blob", "crc")
        pipe.lrange(self.keys.recent_accuracy, 0, RECENT_ACCURACIES - 1)
        (version, blob, crc), recent = pipe.execute()
        return self._decode(version, blob, crc), [float(a) for a in recent]

    def _decode(self, version, blob, crc) -> Pulled:
        if version is None or blob is None:
            raise CorruptBlob(f"job {self.keys.job_id} has no global weights")
        if codec.checksum(blob) != crc.decode():
            raise CorruptBlob(f"global weights of job {self.keys.job_id} fail their checksum")
        return Pulled(int(version), codec.decode_weights(blob))

    # -- asynchronous rules (agwu, async) --------------------------------------------------
    def push(self, *, rule: merge.MergeRule, pulled_version: int, delta: dict[str, np.ndarray],
             accuracy: float, epoch: int, wave: int, subset: int) -> PushResult:
        field = applied_field(epoch, subset)
        done_key = self.keys.wave_done(epoch, wave)
        for rounds in range(1, MAX_CAS_ROUNDS + 1):
            current, recent = self._snapshot()
            staleness = current.version - pulled_version
            problem = _invalid(delta, current.weights)
            if problem:
                return self._refuse("invalid", f"invalid:{problem}", field, subset, done_key, current.version, staleness)
            q = merge.accuracy_weight(accuracy, recent)
            scale = merge.contribution(rule, staleness, q)
            if scale is None:
                return self._refuse("rejected", f"stale:{staleness}", field, subset, done_key, current.version, staleness)
            merged = merge.apply_delta(current.weights, delta, scale)
            blob = codec.encode_weights(merged)
            status, version, done = self.scripts["push"](
                keys=[self.keys.weights, self.keys.applied, self.keys.state, self.keys.staleness,
                      self.keys.recent_accuracy, done_key],
                args=[current.version, blob, codec.checksum(blob), field, staleness, accuracy, subset,
                      RECENT_ACCURACIES],
            )
            status = status.decode()
            if status == "ok":
                return PushResult("accepted", int(version), staleness, scale, int(done), merged, rounds)
            if status == "dup":
                return PushResult("duplicate", int(version), staleness, 0.0, int(done), None, rounds)
        raise RuntimeError(f"push for {field} lost the compare-and-set {MAX_CAS_ROUNDS} times")

    def _refuse(self, status, reason, field, subset, done_key, version, staleness) -> PushResult:
        counter = "rejected" if status == "rejected" else "invalid"
        outcome, done = self.scripts["reject"](
            keys=[self.keys.applied, self.keys.state, done_key], args=[field, subset, reason, counter]
        )
        if outcome.decode() == "dup":
            status = "duplicate"
        return PushResult(status, version, staleness, 0.0, int(done))

    # -- synchronous rule ------------------------------------------------------------------
    def stage(self, *, delta: dict[str, np.ndarray], samples: int, accuracy: float,
              epoch: int, wave: int, subset: int) -> PushResult:
        """Hold one subnetwork's delta until its round is complete."""
        field = applied_field(epoch, subset)
        done_key = self.keys.wave_done(epoch, wave)
        current = self.pull()
        problem = _invalid(delta, current.weights)
        if problem:
            return self._refuse("invalid", f"invalid:{problem}", field, subset, done_key, current.version, 0)
        status, done = self.scripts["stage"](
            keys=[self.keys.applied, self.keys.round_deltas(epoch, wave), self.keys.round_meta(epoch, wave),
                  done_key, self.keys.state, self.keys.staleness],
            args=[field, subset, codec.encode_weights(delta), json.dumps({"n": samples, "a": accuracy})],
        )
        return PushResult("accepted" if status.decode() == "ok" else "duplicate", current.version, 0, 1.0, int(done))

    def commit_round(self, *, rule: merge.MergeRule, epoch: int, wave: int) -> PushResult:
        """Merge every staged delta of a round into one new version (idempotent)."""
        deltas_key, meta_key = self.keys.round_deltas(epoch, wave), self.keys.round_meta(epoch, wave)
        flag = self.keys.round_committed(epoch, wave)
        for rounds in range(1, MAX_CAS_ROUNDS + 1):
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(deltas_key)
            pipe.hgetall(meta_key)
            pipe.get(flag)
            blobs, metas, committed = pipe.execute()
            if committed is not None:
                return PushResult("duplicate", int(committed), 0, 0.0, 0, None, rounds)
            current = self.pull()
            order = sorted(blobs)
            meta = [json.loads(metas[k]) for k in order]
            accuracies = [m["a"] for m in meta]
            qs = [merge.accuracy_weight(a, accuracies) for a in accuracies]
            merged = merge.sync_merge(current.weights, [codec.decode_weights(blobs[k]) for k in order],
                                      [m["n"] for m in meta], qs, rule.alpha)
            blob = codec.encode_weights(merged)
            status, version = self.scripts["commit_round"](
                keys=[self.keys.weights, flag, deltas_key, meta_key],
                args=[current.version, blob, codec.checksum(blob)],
            )
            if status.decode() in ("ok", "dup"):
                ok = status.decode() == "ok"
                return PushResult("accepted" if ok else "duplicate", int(version), 0, rule.alpha, 0,
                                  merged if ok else None, rounds)
        raise RuntimeError(f"round {epoch}:{wave} lost the compare-and-set {MAX_CAS_ROUNDS} times")

    def is_applied(self, epoch: int, subset: int) -> bool:
        return bool(self.client.hexists(self.keys.applied, applied_field(epoch, subset)))


def _invalid(delta: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> str | None:
    """Why a delta cannot be merged (wrong tensors or shapes, NaN or Inf), or None."""
    if delta.keys() != reference.keys():
        return "tensor names differ"
    for name, d in delta.items():
        if d.shape != reference[name].shape:
            return f"{name} has shape {d.shape}, expected {reference[name].shape}"
        if np.issubdtype(d.dtype, np.floating) and not np.all(np.isfinite(d)):
            return f"{name} holds NaN or Inf"
    return None
