"""Splitting a model's tensors into shards of about equal bytes (pure; no I/O).

Weights sharded over a Redis Cluster (broker/weight_shards.py) are only as fast as their
largest shard: each shard is one string on one primary, read and written in parallel with
the others. Tensors are never cut (a shard is a safetensors blob of whole tensors); a model
whose largest tensor outweighs the rest gets fewer useful shards than asked for.
"""

from __future__ import annotations

import json

from bpt.errors import ConfigError

MAX_SHARD_BYTES = 512 * 2**20  # one Redis string's limit


def plan(sizes: dict[str, int], count: int) -> list[list[str]]:
    """Tensor names in `count` groups (fewer if there are fewer tensors), largest tensor first
    into the lightest group; each group keeps the model's own tensor order."""
    count = max(1, min(count, len(sizes)))
    loads = [0] * count
    groups: list[list[str]] = [[] for _ in range(count)]
    for name in sorted(sizes, key=lambda n: -sizes[n]):
        lightest = loads.index(min(loads))
        groups[lightest].append(name)
        loads[lightest] += sizes[name]
    order = {name: i for i, name in enumerate(sizes)}
    too_big = [(n, b) for n, b in zip(groups, loads) if b > MAX_SHARD_BYTES]
    if too_big:
        raise ConfigError(f"a shard of {too_big[0][1] / 2**20:.0f} MiB is over Redis's 512 MiB string limit; "
                         "use more shards")
    return [sorted(g, key=order.__getitem__) for g in groups if g]


MAGIC = b"bpt-manifest\n"


def encode_manifest(shards: list[dict]) -> bytes:
    """What the job's control Redis holds instead of a weights blob: each shard's key,
    checksum and size, in order. Small (about 100 bytes a shard) and installed atomically."""
    return MAGIC + json.dumps({"shards": shards}, sort_keys=True).encode()


def is_manifest(blob) -> bool:
    return bytes(blob[:len(MAGIC)]) == MAGIC


def decode_manifest(blob) -> list[dict]:
    return json.loads(bytes(blob[len(MAGIC):]))["shards"]
