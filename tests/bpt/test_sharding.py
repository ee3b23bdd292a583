"""Splitting tensors into shards (pure)."""

import pytest

from bpt.plan import sharding
from bpt.errors import ConfigError


def test_shards_are_balanced_by_bytes_and_keep_the_models_order():
    sizes = {"a": 100, "b": 10, "c": 60, "d": 40, "e": 50}
    groups = sharding.plan(sizes, 2)
    loads = sorted(sum(sizes[n] for n in g) for g in groups)
    assert loads == [120, 140]  # largest first into the lightest: within 4/3 of the best split (130, 130)
    assert sorted(n for g in groups for n in g) == sorted(sizes)  # every tensor once
    for g in groups:
        assert g == sorted(g, key=list(sizes).index)


def test_no_more_shards_than_tensors_and_a_shard_over_512_mib_is_refused():
    assert len(sharding.plan({"a": 1, "b": 2}, 8)) == 2
    with pytest.raises(ConfigError, match="512 MiB"):
        sharding.plan({"huge": 600 * 2**20}, 4)


def test_a_manifest_is_told_apart_from_a_safetensors_blob():
    blob = sharding.encode_manifest([{"key": "k", "crc": "0", "bytes": 1}])
    assert sharding.is_manifest(blob) and sharding.decode_manifest(blob)[0]["key"] == "k"
    assert not sharding.is_manifest((8).to_bytes(8, "little") + b'{"w": {}}')
