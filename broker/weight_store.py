"""Versioned global weights in Redis: pulls without locks, pushes taking turns.

Pull is one MULTI/EXEC of (version, checksum, blob, recent accuracies): one round trip,
atomic, so it can never mix two versions, and it never waits for a pusher. Push takes the
job's merge lease (a SET NX that expires; pushers waiting for it block on a wake-up list),
merges the subnetwork's delta into the newest weights locally (into the very buffer it
uploads), uploads the blob with a plain SET under a fresh key, and installs it with
push.lua only if the version has not moved meanwhile (compare-and-set; installing is a
RENAME), giving the lease back in the same script. The lease makes the set succeed at the
first try; the compare-and-set still guards the weights when a lease expired under a slow
pusher (it then merges again on top of the newer weights). The same script records the
push as applied for its (epoch, subset), so a redelivered task can never be merged twice.
When the version has not moved since the worker's own pull, the push reuses the pulled
weights instead of reading them again.

With a ShardStore (`--weights-url`, broker/weight_shards.py) the blob in the job's Redis is a
manifest of shards on a Redis Cluster; the scripts, the lease and the exactly-once record
are the same, only what is uploaded before the install and read after a pull differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import uuid

import numpy as np
import redis
from redis.exceptions import RedisClusterException

from bpt.job import lifecycle
from bpt.train import merge, rule_step
from bpt.train.noise_scale import GradStats
from bpt.plan import sharding
from bpt.errors import ConfigError, ConnectionFailed, CorruptBlob

from . import bulk, codec, scripts
from .keeper import Keeper
from .keys import JobKeys, applied_field
from . import clock, weight_shards
from .weight_shards import INSTALL_DEADLINE_SECONDS, ShardMissing, ShardStore

log = logging.getLogger(__name__)
RECENT_ACCURACIES = merge.RECENT_ACCURACIES
MAX_CAS_ROUNDS = 1000
# What _install answers for an upload it did not install: the scripts' "version moved on".
RETRY_REPLY = {"push": (b"retry", b"", 0), "commit_round": (b"retry", b"")}
PULL_ROUNDS = 20
LATE_UPLOADS_TOLERATED = 3  # sharded uploads over INSTALL_DEADLINE_SECONDS in a row: give up, saying why  # a sharded pull that finds a shard retired reads the newer manifest, at most this often
UPLOAD_TTL_MS = 120_000  # an upload whose pusher died before installing it expires
CHECK_FIRST_BYTES = 2**20  # above this, check the version before uploading onto a pulled copy
LEASE_MS = 5000  # a merge lease expires this long after its last renewal (renewed every third of it while held)
LEASE_WAIT_S = 60.0  # a pusher waits this long for the lease, then pushes with compare-and-set alone
LEASE_POLL_S = 0.05  # a waiting pusher looks again at least this often (a wake-up can be missed)
# The scripts refuse a push ('closed') into a job in any other status: a cancelled, failed,
# finishing or finished job's weights never move again.
ACCEPTING = " ".join(lifecycle.ACCEPTS_PUSHES)


@dataclasses.dataclass(frozen=True)
class Pulled:
    version: int
    weights: dict[str, np.ndarray]  # read-only arrays viewing the pulled blob
    recent: tuple[float, ...] = ()  # accuracies of the latest accepted pushes, newest first
    manifest: bytes | None = None  # sharded weights: the manifest this version was read from
    rule_state: dict = dataclasses.field(default_factory=dict)  # the merge rule's state at this version


@dataclasses.dataclass(frozen=True)
class PushResult:
    # accepted | rejected | invalid | duplicate | lost (pulled a version the store lost) |
    # closed (the job no longer accepts pushes: nothing recorded)
    status: str
    version: int  # global version after the push (accepted) or when it was refused
    staleness: int
    scale: float  # the contribution applied to the delta (0 when refused)
    done: int  # subsets finished in this wave, this one included
    weights: dict[str, np.ndarray] | None = None  # the new global weights, when accepted
    cas_rounds: int = 1


class WeightStore:
    def __init__(self, client, job_id: str, script_table: dict | None = None, shards: ShardStore | None = None):
        self.client = client
        self.keys = JobKeys(job_id)
        self.scripts = script_table or scripts.register(client)
        self.shards = shards  # None: the weights are one blob in the job's Redis
        self._late_uploads = 0

    # -- setting and reading ---------------------------------------------------------
    def initialize(self, weights: dict[str, np.ndarray], pipe=None) -> None:
        if self.shards is not None:  # deleting the job deletes these shards, installed or not
            buffers = [codec.encode_weights({n: weights[n] for n in group}) for group in self._plan(weights)]
            blob = self.shards.upload(self.shards.new_keys(self.keys.job_id, len(buffers)), buffers)
        else:
            blob = codec.encode_weights(weights)
        target = pipe or self.client.pipeline(transaction=True)
        target.set(self.keys.weights_blob, blob)
        target.hset(self.keys.weights, mapping={"version": 0, "crc": codec.checksum(blob)})
        target.hdel(self.keys.weights, "rule")  # a rule starts with no state
        if pipe is None:
            target.execute()

    def _plan(self, layout: dict[str, np.ndarray]) -> list[list[str]]:
        return sharding.plan({name: a.nbytes for name, a in layout.items()}, self.shards.count)

    def pull(self) -> Pulled:
        for _ in range(PULL_ROUNDS):
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(self.keys.weights, "version", "crc", "rule")
            pipe.get(self.keys.weights_blob)
            pipe.lrange(self.keys.recent_accuracy, 0, RECENT_ACCURACIES - 1)
            (version, crc, rule_state), blob, recent = pipe.execute()
            if version is None or blob is None or crc is None:
                raise CorruptBlob(f"job {self.keys.job_id} has no global weights")
            if codec.checksum(blob) != crc.decode():
                raise CorruptBlob(f"global weights of job {self.keys.job_id} fail their checksum")
            recent, rule_state = tuple(float(a) for a in recent), rule_step.decode(rule_state)
            if not sharding.is_manifest(blob):
                return Pulled(int(version), codec.decode_weights(blob), recent, rule_state=rule_state)
            if self.shards is None:
                raise ConfigError(f"job {self.keys.job_id} keeps its weights sharded on a Redis Cluster: "
                                  "give this process that cluster's --weights-url (BPT_WEIGHTS_URL)")
            try:
                return Pulled(int(version), self.shards.fetch(blob), recent, manifest=bytes(blob), rule_state=rule_state)
            except ShardMissing:
                continue  # a newer version retired a shard as we read: its manifest is current
        raise CorruptBlob(f"job {self.keys.job_id}: {PULL_ROUNDS} pulls in a row found a weight shard gone")

    def version(self) -> int:
        raw = self.client.hget(self.keys.weights, "version")
        if raw is None:
            raise CorruptBlob(f"job {self.keys.job_id} has no global weights")
        return int(raw)

    def _install(self, script: str, layout: dict[str, np.ndarray], fill, keys: list, args: list,
                 previous: Pulled | None = None):
        """Upload new weights under a fresh key and run the script that installs them, in one
        round trip: (reply, new weights). fill(views) writes the weights straight into the
        buffer that is sent. The upload key and the blob's checksum go first in the script's
        KEYS and ARGV. Sharded: the shards go to the cluster first, and what is uploaded and
        installed here is their manifest (previous: the version merged onto, listed as
        retired once this one is installed)."""
        if self.shards is None:
            buffer, merged = codec.weights_buffer(layout)
            fill(merged)
        else:
            parts = [codec.weights_buffer({n: layout[n] for n in group}) for group in self._plan(layout)]
            merged = {name: view for _, views in parts for name, view in views.items()}
            fill(merged)
            shard_keys = self.shards.new_keys(self.keys.job_id, len(parts))
            listed = json.dumps(shard_keys)
            self.client.zadd(self.keys.shard_uploads, {listed: clock.now(self.client)})  # before any byte is written
            began = time.monotonic()
            buffer = self.shards.upload(shard_keys, [b for b, _ in parts])
            if time.monotonic() - began > INSTALL_DEADLINE_SECONDS:  # maybe counted abandoned already
                self._drop_upload(shard_keys, listed)
                self._late_uploads += 1
                if self._late_uploads >= LATE_UPLOADS_TOLERATED:
                    raise ConnectionFailed(f"writing the weight shards of job {self.keys.job_id} took over "
                                           f"{INSTALL_DEADLINE_SECONDS:.0f} s {self._late_uploads} times in a row: "
                                           "the weights cluster is too slow for this model")
                return RETRY_REPLY[script], merged
            self._late_uploads = 0
        upload = self.keys.weights_next(uuid.uuid4().hex)
        keys, args = [upload] + keys, [codec.checksum(buffer)] + args
        command = ("EVALSHA", self.scripts[script].sha, len(keys), *keys, *args)
        try:
            reply = bulk.set_buffer(self.client, upload, buffer, UPLOAD_TTL_MS, then=command)
        except redis.exceptions.NoScriptError:  # Redis restarted and forgot it: load and run again
            reply = self.scripts[script](keys=keys, args=args)
        if self.shards is not None:
            try:
                if reply[0] == b"ok":
                    self._installed(listed, previous)
                else:
                    self._drop_upload(shard_keys, listed)
            except (redis.RedisError, RedisClusterException) as e:
                # The push's outcome stands (the script decided it); what is left undeleted
                # stays listed, and the next install or the job's end deletes it.
                log.warning("weight shard clean-up of job %s failed: %s", self.keys.job_id, e)
        return reply, merged

    # -- sharded weights: what to delete, recorded here (broker/weight_shards.py) ---------
    def _drop_upload(self, shard_keys: list[str], listed: str) -> None:
        self.shards.delete(shard_keys)
        self.client.zrem(self.keys.shard_uploads, listed)

    def _installed(self, listed: str, previous: Pulled | None) -> None:
        """Our upload is the current version: strike it off the uploads, list the version it
        replaced as retired, and delete what has been retired or abandoned long enough."""
        now = clock.now(self.client)
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.shard_uploads, listed)
        if previous is not None and previous.manifest:
            replaced = [s["key"] for s in sharding.decode_manifest(previous.manifest)]
            pipe.zadd(self.keys.shard_retired, {json.dumps(replaced): now})
        pipe.execute()
        self.sweep_shards(now - weight_shards.RETIRED_SECONDS, now - weight_shards.ABANDONED_SECONDS)

    def sweep_shards(self, retired_before: float | str = "+inf", abandoned_before: float | None = None) -> None:
        """Delete the shards of versions retired before `retired_before` (default: all) and
        of uploads listed before `abandoned_before` (default: ABANDONED_SECONDS ago), never
        the current version's. The job's end calls it with the defaults."""
        if self.shards is None:
            return
        if abandoned_before is None:
            abandoned_before = clock.now(self.client) - weight_shards.ABANDONED_SECONDS
        retired = self.client.zrangebyscore(self.keys.shard_retired, "-inf", retired_before)
        abandoned = self.client.zrangebyscore(self.keys.shard_uploads, "-inf", abandoned_before)
        current = self.client.get(self.keys.weights_blob)
        keep = set(s["key"] for s in sharding.decode_manifest(current)) if current and sharding.is_manifest(current) \
            else set()
        for zset, members in ((self.keys.shard_retired, retired), (self.keys.shard_uploads, abandoned)):
            for member in members:
                keys = [k for k in json.loads(member) if k not in keep]  # never the current version's
                if keys:
                    self.shards.delete(keys)
                self.client.zrem(zset, member)

    # -- asynchronous rules (normalized, agwu, async, adascale) ------------------------------
    def push(self, *, rule: merge.MergeRule, pulled_version: int, delta: dict[str, np.ndarray],
             accuracy: float, epoch: int, wave: int, subset: int, base: Pulled | None = None,
             live: int = 1, stats: GradStats | None = None, progress: float = 1.0) -> PushResult:
        """Merge delta (computed against version pulled_version) into the newest weights.

        live: the training processes in the cluster (worker_registry.live_processes), which
        the normalized rule divides by and a default s_max is twice of. stats: the gradient
        statistics the task measured, progress: the job's share of samples trained (what a
        rule's step may use, bpt.train.rule_step). The rule's state is read with the weights
        merged onto and installed with the new ones, by the same compare-and-set.

        base: the Pulled the delta was computed against, if the caller still has it; while
        the version has not moved, the push merges onto it without reading the weights again.

        Pushers take turns: the job's merge lease (SET NX with a TTL) lets one merge and
        install at a time while the others wait for it to be given back, so a push uploads
        once instead of once per lost compare-and-set (at 4 MB, 16 and 32 pushers lost it
        7.5 and 11.5 times a push, benchmarks/contention.py). Pulls never touch the lease.
        A pusher that cannot get it within LEASE_WAIT_S pushes without it; one that dies
        holding it delays the others by at most LEASE_MS."""
        token = uuid.uuid4().hex
        leased = self._take_lease(token)
        try:
            with Keeper(lambda: self._renew_lease(token), LEASE_MS / 3000) if leased else contextlib.nullcontext():
                return self._push(rule, pulled_version, delta, accuracy, epoch, wave, subset, base, live,
                                  token if leased else "", stats, progress)
        finally:
            if leased:  # a no-op when push.lua gave it back already
                self._give_back_lease(token)

    def _take_lease(self, token: str) -> bool:
        deadline = time.monotonic() + LEASE_WAIT_S
        while time.monotonic() < deadline:
            if self.client.set(self.keys.merge_lease, token, nx=True, px=LEASE_MS):
                return True
            self.client.blpop([self.keys.merge_wake], timeout=LEASE_POLL_S)  # woken on release, or poll
        return False

    def _renew_lease(self, token: str) -> None:
        """Keep the lease while this push merges and uploads (a large model's upload outlasts
        LEASE_MS)."""
        self.scripts["renew_lease"](keys=[self.keys.merge_lease], args=[token, LEASE_MS])

    def _give_back_lease(self, token: str) -> None:
        try:
            self.scripts["release_lease"](keys=[self.keys.merge_lease, self.keys.merge_wake], args=[token])
        except redis.RedisError:
            pass  # Redis gone: the lease expires on its own

    def _push(self, rule, pulled_version, delta, accuracy, epoch, wave, subset, base, live, token, stats,
              progress) -> PushResult:
        field = applied_field(epoch, subset)
        done_key = self.keys.wave_done(epoch, wave)
        bad_values = _bad_values(delta)
        current = base if base is not None and base.version == pulled_version else None
        big = sum(d.nbytes for d in delta.values()) > CHECK_FIRST_BYTES
        for rounds in range(1, MAX_CAS_ROUNDS + 1):
            # Holding the lease, one cheap version check tells whether the pulled weights are
            # still current; without it, a large upload is not risked on them unchecked.
            if current is None or (current is base and (big or token) and self.version() != current.version):
                current = self.pull()
            staleness = current.version - pulled_version
            if staleness < 0:  # Redis lost versions (a restart that rolled its AOF back): the
                # delta was computed from weights that no longer exist; nothing is recorded,
                # so the caller trains the subset again from the weights that do
                return PushResult("lost", current.version, staleness, 0.0, 0)
            problem = bad_values or _bad_layout(delta, current.weights)
            if problem:
                return self._refuse("invalid", f"invalid:{problem}", field, subset, done_key, current.version, staleness)
            q = merge.accuracy_weight(accuracy, current.recent)
            rule_state, scale = rule_step.step(rule, current.rule_state,
                                               rule_step.Push(staleness, q, live, progress, stats))
            if scale is None:
                return self._refuse("rejected", f"stale:{staleness}", field, subset, done_key, current.version, staleness)
            (status, version, done), merged = self._install(
                "push", current.weights, lambda out: merge.apply_delta(current.weights, delta, scale, out=out),
                keys=[self.keys.weights_blob, self.keys.weights, self.keys.applied, self.keys.state,
                      self.keys.staleness, self.keys.recent_accuracy, done_key, self.keys.merge_lease,
                      self.keys.merge_wake],
                args=[current.version, field, staleness, accuracy, subset, RECENT_ACCURACIES, token, ACCEPTING,
                      rule_step.encode(rule_state) if rule_state != current.rule_state else ""],
                previous=current)
            status = status.decode()
            if status == "closed":
                return PushResult("closed", int(version or current.version), staleness, 0.0, 0, None, rounds)
            if status == "ok":
                return PushResult("accepted", int(version), staleness, scale, int(done), merged, rounds)
            if status == "dup":
                return PushResult("duplicate", int(version), staleness, 0.0, int(done), None, rounds)
            current = None  # the version moved on: merge again on top of the newer weights
        raise RuntimeError(f"push for {field} lost the compare-and-set {MAX_CAS_ROUNDS} times")

    def _refuse(self, status, reason, field, subset, done_key, version, staleness) -> PushResult:
        counter = "rejected" if status == "rejected" else "invalid"
        outcome, done = self.scripts["reject"](
            keys=[self.keys.applied, self.keys.state, done_key], args=[field, subset, reason, counter, ACCEPTING]
        )
        if outcome.decode() in ("dup", "closed"):
            status = "duplicate" if outcome.decode() == "dup" else "closed"
        return PushResult(status, version, staleness, 0.0, int(done))

    # -- synchronous rule ------------------------------------------------------------------
    def stage(self, *, delta: dict[str, np.ndarray], samples: int, accuracy: float,
              epoch: int, wave: int, subset: int) -> PushResult:
        """Hold one subnetwork's delta until its round is complete."""
        field = applied_field(epoch, subset)
        done_key = self.keys.wave_done(epoch, wave)
        current = self.pull()
        problem = _bad_values(delta) or _bad_layout(delta, current.weights)
        if problem:
            return self._refuse("invalid", f"invalid:{problem}", field, subset, done_key, current.version, 0)
        status, done = self.scripts["stage"](
            keys=[self.keys.applied, self.keys.round_deltas(epoch, wave), self.keys.round_meta(epoch, wave),
                  done_key, self.keys.state, self.keys.staleness],
            args=[field, subset, codec.encode_weights(delta), json.dumps({"n": samples, "a": accuracy}), ACCEPTING],
        )
        outcome = {"ok": "accepted", "dup": "duplicate", "closed": "closed"}[status.decode()]
        return PushResult(outcome, current.version, 0, 1.0 if outcome == "accepted" else 0.0, int(done))

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
            # A round whose every delta was refused as invalid stages none: its version keeps the
            # weights as they were (it failed the job before: issue 26, finding 7).
            round_weights = merge.sync_merge(current.weights, [codec.decode_weights(blobs[k]) for k in order],
                                             [m["n"] for m in meta], qs, rule.alpha) if order else dict(current.weights)
            (status, version), merged = self._install(
                "commit_round", round_weights, _copy_of(round_weights),
                keys=[self.keys.weights_blob, self.keys.weights, flag, deltas_key, meta_key, self.keys.state],
                args=[current.version, ACCEPTING], previous=current)
            if status.decode() == "closed":
                return PushResult("closed", current.version, 0, 0.0, 0, None, rounds)
            if status.decode() in ("ok", "dup"):
                ok = status.decode() == "ok"
                return PushResult("accepted" if ok else "duplicate", int(version), 0, rule.alpha, 0,
                                  merged if ok else None, rounds)
        raise RuntimeError(f"round {epoch}:{wave} lost the compare-and-set {MAX_CAS_ROUNDS} times")

    def is_applied(self, epoch: int, subset: int) -> bool:
        return bool(self.client.hexists(self.keys.applied, applied_field(epoch, subset)))


def _copy_of(weights: dict[str, np.ndarray]):
    """A fill function for _install that copies weights as they are."""
    def fill(out: dict[str, np.ndarray]) -> None:
        for name, view in out.items():
            view[...] = weights[name]
    return fill


def _bad_values(delta: dict[str, np.ndarray]) -> str | None:
    """Why a delta cannot be merged for its values (NaN or Inf), or None."""
    for name, d in delta.items():
        if np.issubdtype(d.dtype, np.floating) and not np.all(np.isfinite(d)):
            return f"{name} holds NaN or Inf"
    return None


def _bad_layout(delta: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> str | None:
    """Why a delta does not fit the weights (other tensors or shapes), or None."""
    if delta.keys() != reference.keys():
        return "tensor names differ"
    for name, d in delta.items():
        if d.shape != reference[name].shape:
            return f"{name} has shape {d.shape}, expected {reference[name].shape}"
    return None
