"""The weights codec: the safetensors format, read without copies, strict about its header."""

import json

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bpt.errors import CorruptBlob
from bpt.broker import codec

WEIGHTS = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7, "conv.bias": np.ones(2, np.float64),
           "bn.num_batches_tracked": np.array(5, dtype=np.int64), "empty": np.zeros((0, 3), np.float32)}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        np.testing.assert_array_equal(a[name], b[name])


def test_what_we_write_the_safetensors_library_reads_and_back():
    assert_same(st_load(bytes(codec.encode_weights(WEIGHTS))), WEIGHTS)
    assert_same(codec.decode_weights(st_save(WEIGHTS, metadata={"model": "x"})), WEIGHTS)


def test_decoded_arrays_view_the_blob_instead_of_copying_it():
    blob = bytes(codec.encode_weights(WEIGHTS))
    decoded = codec.decode_weights(blob)
    assert not decoded["conv.weight"].flags.writeable
    assert np.shares_memory(decoded["conv.weight"], np.frombuffer(blob, np.uint8))


def test_weights_buffer_views_fill_the_blob_in_place():
    buffer, views = codec.weights_buffer(WEIGHTS)
    for name, view in views.items():
        view[...] = WEIGHTS[name]
    assert bytes(buffer) == bytes(codec.encode_weights(WEIGHTS))


def header_blob(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize("blob", [
    b"",
    b"\x80\x04garbage",  # a pickle
    (10**12).to_bytes(8, "little") + b"{}",  # header length beyond the blob
    header_blob([], b""),  # header not an object
    header_blob({"w": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),  # object dtype
    header_blob({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8),  # size mismatch
    header_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),  # truncated data
    header_blob({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),  # trailing bytes
    header_blob({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),  # overlap
    header_blob({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, -8]}}, b""),  # negative
    header_blob({"w": {"dtype": "F32"}}, b""),  # fields missing
])
def test_malformed_blobs_are_refused_with_corrupt_blob(blob):
    with pytest.raises(CorruptBlob):
        codec.decode_weights(blob)
