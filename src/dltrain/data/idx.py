"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed, straight into a tensor.

A damaged file is named in the error with what is wrong (missing, empty, magic number, size, gzip),
never left to surface as a reshape traceback later.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from dltrain.errors import DataError

# IDX type codes (third byte of the magic number) → numpy big-endian dtypes.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped if they start with the gzip magic (whatever the file is called)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not raw:
        raise DataError(f"{path}: empty file (0 bytes); an interrupted download? delete it and fetch it again")
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut-off stream is EOFError
        raise DataError(f"{path}: corrupt or truncated gzip data ({type(e).__name__}: {e}); "
                        "delete it and fetch it again") from None


def read_idx(path: str | Path) -> torch.Tensor:
    """An IDX file as a tensor of its own shape and dtype (native byte order)."""
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path}: wrong magic number {data[:4].hex(' ')}; an IDX file starts with "
                        f"00 00 <type: one of {', '.join(f'{t:02x}' for t in _DTYPES)}> <ndim>")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header: {len(data)} bytes, but {ndim} dimensions need {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd headers
    if len(data) < expected:
        raise DataError(f"{path}: truncated: {len(data)} bytes, but the header's shape {list(shape)} "
                        f"needs {expected} ({expected - len(data)} missing)")
    if len(data) > expected:
        raise DataError(f"{path}: {len(data) - expected} unexpected bytes after the data: the header's shape "
                        f"{list(shape)} needs {expected} bytes, the file has {len(data)}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as IDX (gzip if the name ends in .gz); tests and tools use it."""
    if tensor.dtype != torch.uint8:
        raise TypeError(f"write_idx writes uint8 tensors, got {tensor.dtype}")
    array = tensor.cpu().numpy()
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    blob = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(blob, mtime=0) if path.suffix == ".gz" else blob)
