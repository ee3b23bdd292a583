"""Bytes in Redis, without pickle: weights as safetensors, data arrays as .npy.

Both formats are a small header plus raw little-endian data; both readers here refuse
object dtypes, so a blob from Redis or a user's file can never run code. Weights are
read and written here rather than with safetensors.numpy: its save and load copy every
tensor, which cost 60 ms a push of a 45 MB model (benchmarks/weight_store.py); the format
is the same, and the tests check that the safetensors library reads what this writes.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import math

import numpy as np
import xxhash

from bpt.errors import CorruptBlob

NPY_PREAMBLE = 12  # magic (6) + version (2) + header length (2 or 4)


# safetensors dtype names <-> little-endian numpy dtypes (the ones a CNN's state holds).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "BOOL": "?"}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 2**20


def weights_buffer(layout: dict[str, np.ndarray], metadata: dict[str, str] | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An empty safetensors blob shaped like `layout`, and writable arrays viewing its tensors.

    Filling the views (e.g. with merge.apply_delta(..., out=views)) builds the blob in place:
    one pass over the data instead of a merge, a copy and a serialisation."""
    header, offset = {}, 0
    for name, array in layout.items():
        dtype = np.dtype(array.dtype).newbyteorder("<") if array.dtype.byteorder == ">" else np.dtype(array.dtype)
        if dtype not in NAMES:
            raise CorruptBlob(f"tensor {name!r} has unsupported dtype {array.dtype}")
        header[name] = {"dtype": NAMES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.size * dtype.itemsize]}
        offset += array.size * dtype.itemsize
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8 bytes
    start = 8 + len(text)
    buffer = np.empty(start + offset, np.uint8)  # uninitialised: the caller fills every tensor
    buffer[:start] = np.frombuffer(len(text).to_bytes(8, "little") + text, np.uint8)
    views = {name: np.frombuffer(buffer, dtype=dtype, count=count, offset=at).reshape(shape)
             for name, dtype, count, at, shape in _layout(text, len(buffer))}
    return buffer, views


def encode_weights(weights: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """Weights as a safetensors blob (readable by the safetensors library)."""
    buffer, views = weights_buffer(weights, metadata)
    for name, view in views.items():
        view[...] = weights[name]
    return buffer.tobytes()


def decode_weights(blob) -> dict[str, np.ndarray]:
    """A safetensors blob as read-only arrays that view the blob itself (no copy).

    Checks the header strictly: known dtypes only, offsets inside the data and tiling it."""
    try:
        length = int.from_bytes(bytes(blob[:8]), "little")
        if len(blob) < 8 or not 2 <= length <= min(MAX_HEADER, len(blob) - 8):
            raise ValueError("bad header length")
        layout = _layout(bytes(blob[8:8 + length]), len(blob))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
        raise CorruptBlob(f"not a valid weights blob ({e})") from e
    return {name: np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)
            for name, dtype, count, offset, shape in layout}


@functools.lru_cache(maxsize=64)
def _layout(header_bytes: bytes, size: int) -> tuple:
    """(name, dtype, count, offset, shape) of each tensor of a blob of `size` bytes with this
    header, checked. Cached: every version of a job's weights has the same header, and parsing
    it was a fifth of a pull of a 0.25 MB model."""
    header = json.loads(header_bytes)
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    header.pop("__metadata__", None)
    data = 8 + len(header_bytes)  # where the tensors start
    end, layout = data, []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dtype, shape, count, begin = _checked(size, data, info, name)
        if data + begin != end:
            raise ValueError(f"tensor {name!r} does not follow the previous one")
        end = data + begin + count * dtype.itemsize
        layout.append((name, dtype, count, data + begin, shape))
    if end != size:
        raise ValueError("data size does not match the header")
    return tuple(layout)


def _checked(size: int, start: int, info: dict, name: str) -> tuple[np.dtype, tuple, int, int]:
    dtype = np.dtype(DTYPES[info["dtype"]])
    shape = tuple(int(n) for n in info["shape"])
    begin, end = (int(n) for n in info["data_offsets"])
    count = math.prod(shape)
    if min(shape, default=0) < 0 or begin < 0 or end - begin != count * dtype.itemsize or start + end > size:
        raise ValueError(f"tensor {name!r} has inconsistent offsets")
    return dtype, shape, count, begin


def checksum(blob) -> str:
    """xxh3-64 of the blob: about 10x faster than CRC32, and it runs on every pull."""
    return xxhash.xxh3_64_hexdigest(blob)


def encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")),
                              allow_pickle=False)
    return buffer.getvalue()


def decode_array(blob: bytes) -> np.ndarray:
    try:
        return np.lib.format.read_array(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorruptBlob(f"not a valid array blob ({e})") from e


def array_header(prefix: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse an .npy header from the first bytes of a blob: (dtype, shape, data offset).

    Lets a worker fetch a row range with GETRANGE instead of the whole array."""
    if prefix[:6] != b"\x93NUMPY":
        raise CorruptBlob("staged array has no .npy header")
    major = prefix[6]
    if major == 1:
        length, start = int.from_bytes(prefix[8:10], "little"), 10
    else:
        length, start = int.from_bytes(prefix[8:12], "little"), 12
    try:
        header = ast.literal_eval(prefix[start:start + length].decode("latin1"))
        dtype = np.dtype(header["descr"])
    except (ValueError, SyntaxError, KeyError, TypeError) as e:
        raise CorruptBlob(f"staged array header is malformed ({e})") from e
    if dtype.hasobject or header.get("fortran_order"):
        raise CorruptBlob("staged array must be a plain C-ordered numeric array")
    return dtype, tuple(header["shape"]), start + length
