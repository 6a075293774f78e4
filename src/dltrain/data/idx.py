"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed, straight into a tensor.

A damaged file is named in the error with what is wrong (magic number, size, gzip), never left to
surface as a reshape traceback later.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

# IDX type codes (third byte of the magic number) → numpy big-endian dtypes.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(RuntimeError):
    """A data file that is missing or unreadable; the message names the file."""


def read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None


def read_idx(path: str | Path) -> torch.Tensor:
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: wrong magic number {data[:4].hex() or '(empty file)'}; "
                        "an IDX file starts with 00 00 <type> <ndim>")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, {header} expected)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: wrong size: {len(data)} bytes, the header's shape {list(shape)} needs {expected}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as IDX (gzip if the name ends in .gz); tests and tools use it."""
    array = tensor.numpy().astype(np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    blob = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
