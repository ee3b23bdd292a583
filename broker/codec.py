"""Bytes in Redis, without pickle: weights as safetensors, data arrays as .npy.

Both formats are a small header plus raw little-endian data; both readers here refuse
object dtypes, so a blob from Redis or a user's file can never run code.
"""

from __future__ import annotations

import ast
import io
import zlib

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bpt.errors import CorruptBlob

NPY_PREAMBLE = 12  # magic (6) + version (2) + header length (2 or 4)


def encode_weights(weights: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    return st_save({k: np.ascontiguousarray(v) for k, v in weights.items()}, metadata=metadata)


def decode_weights(blob: bytes) -> dict[str, np.ndarray]:
    try:
        return st_load(bytes(blob))
    except (SafetensorError, ValueError, TypeError, OSError) as e:
        raise CorruptBlob(f"not a valid weights blob ({e})") from e


def checksum(blob: bytes) -> str:
    return format(zlib.crc32(blob), "08x")


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
