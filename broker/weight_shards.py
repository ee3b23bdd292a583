"""The bytes of a job's weights, sharded over a Redis Cluster (`--weights-url`).

One Redis moves about 1 GB/s here and caps a string at 512 MiB; a cluster's primaries move
theirs in parallel. Each version's tensors are split into shards (bpt.plan.sharding.plan), each
uploaded under its own hash tag, chosen so that the shards land on different primaries, and
under a key of its own upload (a token): a shard key is written once and never changed.

The job's control Redis keeps, where a single-Redis job keeps its blob, a small manifest
(bpt.plan.sharding): every shard's key and checksum. A push uploads its shards first, then
installs the manifest with the very compare-and-set script a single blob uses (push.lua or
commit_round.lua: version check, exactly-once record, RENAME), so a version exists only
once all its shards do, and a pull that reads a manifest reads shards nobody rewrites: it
can never mix two versions.

Shards never expire on their own (a TTL on the current version's shards, cleared after the
install, could run out if the installer died in between). What to delete is recorded in
the job's Redis instead (WeightStore): an upload is listed before its shards are written and
struck off once installed or discarded; an installed version's predecessor is listed as
retired. Whoever installs next deletes retired versions older than RETIRED_SECONDS (long
after any pull that read their manifest has fetched them; a pull that still finds a shard
gone reads the newer manifest) and uploads older than ABANDONED_SECONDS (their pusher died),
never the current version's.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import numpy as np
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from bpt.plan import sharding
from bpt.errors import ConnectionFailed, CorruptBlob

from . import bulk, codec
from .connection import connect, redact
from .keys import glob_escape, weight_shard, weight_shard_pattern

RETIRED_SECONDS = 10.0  # a replaced version's shards stay this long for pulls in flight (a pull
# takes about 0.2 s for 180 MB here; one slower than this reads the newer version instead)
ABANDONED_SECONDS = 120.0  # an upload listed this long was left by a pusher that died
INSTALL_DEADLINE_SECONDS = 60.0  # a pusher whose shards took longer than this to write does not
# install them (another installer may already count them abandoned): it merges again


class ShardMissing(Exception):
    """A shard named by the manifest just read is gone: a newer version retired it."""


class ShardStore:
    """Where sharded weights live: a RedisCluster (or one Redis: every shard on it)."""

    def __init__(self, client, shards: int | None = None):
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        primaries = client.get_primaries() if self.cluster else [None]
        self.count = shards or len(primaries)
        self._tags: dict[tuple[str, int], list[str]] = {}
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=min(32, self.count))

    # -- placement ---------------------------------------------------------------------
    def tags(self, job_id: str, count: int) -> list[str]:
        """Hash tags for `count` shards, round robin over the primaries: a tag whose slot
        the next primary serves (found by trying tags 0, 1, 2 ...)."""
        cached = self._tags.get((job_id, count))
        if cached:
            return cached
        if not self.cluster:
            tags = [str(i) for i in range(count)]
        else:
            owners = [p.name for p in self.client.get_primaries()]
            tags, used, k = [], set(), 0
            for i in range(count):
                want = owners[i % len(owners)]
                while True:
                    tag = str(k)
                    k += 1
                    node = self.client.nodes_manager.get_node_from_slot(key_slot(f"{job_id}/{tag}".encode()))
                    if node.name == want and tag not in used:
                        tags.append(tag)
                        used.add(tag)
                        break
                    if k > 100_000:
                        raise ConnectionFailed("cannot place weight shards: the cluster's slots look unassigned")
        self._tags[(job_id, count)] = tags
        return tags

    def _node_client(self, key: str):
        return self.client.get_node_from_key(key).redis_connection if self.cluster else self.client

    # -- writing and reading -----------------------------------------------------------
    def new_keys(self, job_id: str, count: int) -> list[str]:
        """Keys for the `count` shards of one new upload."""
        token = uuid.uuid4().hex
        return [weight_shard(job_id, tag, token) for tag in self.tags(job_id, count)]

    def upload(self, keys: list[str], buffers: list) -> bytes:
        """Write each buffer (a safetensors blob) under its key; returns the manifest to install."""
        list(self._threads.map(lambda kb: self._set(kb[0], kb[1]), zip(keys, buffers)))
        return sharding.encode_manifest([{"key": k, "crc": codec.checksum(b), "bytes": memoryview(b).nbytes}
                                         for k, b in zip(keys, buffers)])

    def _set(self, key: str, buffer) -> None:
        try:
            bulk.set_buffer(self._node_client(key), key, buffer)  # no copy of the bytes
        except redis.ResponseError as e:
            if "MOVED" not in str(e) and "ASK" not in str(e):
                raise
            self.client.set(key, memoryview(buffer).cast("B").tobytes())  # resharded: let redis-py route it

    def fetch(self, manifest: bytes) -> dict[str, np.ndarray]:
        """The weights a manifest names: each shard read in parallel and checked against its
        checksum. ShardMissing if one was retired meanwhile (the caller reads again)."""
        shards = sharding.decode_manifest(manifest)
        blobs = list(self._threads.map(lambda s: self._get(s["key"]), shards))
        weights: dict[str, np.ndarray] = {}
        for shard, blob in zip(shards, blobs):
            if blob is None:
                raise ShardMissing(shard["key"])
            if codec.checksum(blob) != shard["crc"]:
                raise CorruptBlob(f"weight shard {shard['key']} fails its checksum")
            weights.update(codec.decode_weights(blob))
        return weights

    def _get(self, key: str):
        try:
            return self._node_client(key).get(key)
        except redis.ResponseError:  # resharded (MOVED, ASK): let redis-py route it
            return self.client.get(key)

    def delete(self, keys: list[str]) -> None:
        """Delete shards (an upload not installed, a retired version)."""
        def one(key):
            try:
                self._node_client(key).delete(key)
            except redis.ResponseError:  # resharded: let redis-py route it
                self.client.delete(key)
        list(self._threads.map(one, keys))

    def delete_job(self, job_id: str) -> int:
        """Every shard of a job, on every primary (the job is being deleted)."""
        pattern = glob_escape(weight_shard_pattern(job_id)[:-1]) + "*"
        nodes = [p.redis_connection for p in self.client.get_primaries()] if self.cluster else [self.client]
        deleted = 0
        for node in nodes:
            for key in list(node.scan_iter(match=pattern, count=1000)):
                deleted += node.delete(key)
        return deleted

    def close(self) -> None:
        self._threads.shutdown(wait=False)
        self.client.close()


def open_shards(url: str | None, timeout: float, socket_timeout: float, shards: int | None = None) -> ShardStore | None:
    """A ShardStore for --weights-url (None: weights stay in the job's Redis). A Redis with
    cluster mode on is opened as a cluster; any other is one node holding every shard."""
    if not url:
        return None
    plain = connect(url, timeout, socket_timeout)
    try:
        is_cluster = plain.info("cluster").get("cluster_enabled") == 1
    finally:
        plain.close()
    if not is_cluster:
        return ShardStore(connect(url, timeout, socket_timeout), shards)
    try:
        cluster = RedisCluster.from_url(url, socket_connect_timeout=timeout, socket_timeout=socket_timeout,
                                        socket_keepalive=True)
    except (redis.RedisError, OSError) as e:
        raise ConnectionFailed(f"cannot open the Redis Cluster at {redact(url)}: {e}") from e
    return ShardStore(cluster, shards)
