"""CIFAR-10 from the official "python version" (the layout torchvision downloads): `cifar-10-batches-py/`
with `data_batch_1`…`data_batch_5` and `test_batch`, each a pickled dict of b"data" (uint8 N×3072, the
planes R, G, B of 32×32 each) and b"labels" (N ints).

Looked for in `data.root/cifar-10-batches-py`, then in `data.root` itself; otherwise torchvision's URL and
checksums (`torchvision.datasets.CIFAR10`) download and unpack the archive into `data.root`.

The batches are pickles. They are unpickled with an allow-list that admits only what a numpy array and
plain containers need, so a tampered file fails with a DataError instead of running code.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from dltrain.data.splits import Splits
from dltrain.data.idx import read_bytes
from dltrain.errors import DataError

BASE_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
NUM_CLASSES = 10
SHAPE = (3, 32, 32)

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"
# (module, name) a CIFAR batch may reference: numpy array reconstruction, plus the helper that Python 3
# uses for bytes in protocol-2 pickles. Everything else is refused.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
    ("_codecs", "encode"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core."):  # pickles written by numpy 1.x; numpy 2 moved it to numpy._core
            module = _NUMPY_CORE + module[len("numpy.core"):]
        return super().find_class(module, name)


def read_cifar_batch(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file as (uint8 N×3×32×32, int64 N); a DataError naming the file on anything unexpected."""
    path = Path(path)
    raw = read_bytes(path)  # missing, unreadable or empty: a DataError naming the file
    try:
        # encoding="bytes": the official batches were pickled by Python 2, their str keys arrive as bytes.
        entry = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as e:
        raise DataError(f"{path}: {e}: a CIFAR batch holds only arrays, lists and bytes; "
                        "this file is not one (or was tampered with)") from None
    except Exception as e:  # EOFError (truncated), UnpicklingError, ValueError…: all mean a damaged file
        raise DataError(f"{path}: not a readable CIFAR batch pickle, truncated or corrupt "
                        f"({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(entry).__name__}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise DataError(f"{path}: keys {sorted(map(str, entry))} lack 'data' and/or 'labels'")
    data, labels = entry["data"], entry["labels"]
    size = int(np.prod(SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        what = f"{data.dtype} array of shape {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' is a {what}, expected a uint8 array of shape [N, {size}]")
    try:
        y = np.asarray(labels)
    except Exception:
        y = None
    if y is None or y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be a list of N integers")
    if len(y) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels span {y.min()}..{y.max()}, expected 0..{NUM_CLASSES - 1}")
    x = torch.from_numpy(np.ascontiguousarray(data).reshape(len(data), *SHAPE).copy())
    return x, torch.from_numpy(y.astype(np.int64))


def _batches_dir(root: Path) -> Path | None:
    for candidate in (root / BASE_FOLDER, root):
        if (candidate / TRAIN_FILES[0]).is_file() or (candidate / TEST_FILES[0]).is_file():
            return candidate
    return None


def _download(root: Path) -> Path:
    """torchvision's URL and checksums, its download/verify/unpack; our reader (not CIFAR10's) afterwards."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
        if not check_integrity(str(root / CIFAR10.base_folder / name), md5):
            raise DataError(f"{root / CIFAR10.base_folder / name}: missing or wrong checksum after unpacking "
                            f"{root / CIFAR10.filename}; delete both and try again")
    return root / CIFAR10.base_folder


def locate_cifar10(root: str | None, explicit: bool = False) -> Path:
    """`explicit`: a data.root the user named holds the files; nothing is downloaded into it."""
    if root:
        found = _batches_dir(Path(root))
        if found is not None:
            return found
    if root and explicit:
        raise DataError(f"data.root={root} holds no CIFAR-10 ({', '.join(TRAIN_FILES + TEST_FILES)} in {root} or "
                        f"{Path(root) / BASE_FOLDER}); put them there, or leave data.root unset to download into "
                        f"paths.data_dir")
    from torchvision.datasets import CIFAR10

    url = CIFAR10.url
    if not root:
        failure = "nothing was downloaded because data.root is not set"
    else:
        try:
            return _download(Path(root))
        except DataError:
            raise
        except Exception as e:  # no network, a proxy, a bad checksum
            failure = f"the download of {url} into {root} failed ({type(e).__name__}: {' '.join(str(e).split())})"
    looked = f"{Path(root) / BASE_FOLDER} and {root}" if root else "(nowhere: data.root is not set)"
    raise DataError(
        f"CIFAR-10 not found. Looked in: {looked}, for {', '.join(TRAIN_FILES + TEST_FILES)};\n"
        f"and {failure}.\n"
        f"Get it with one of:\n"
        f"  download {url} elsewhere and unpack it: tar xzf cifar-10-python.tar.gz -C {root or 'DIR'}\n"
        f"  python train.py data=cifar10 data.root=/dir/containing/{BASE_FOLDER}\n"
        f"  run once with network access: torchvision downloads it into data.root"
    )


def load_cifar10(root: str | None, explicit: bool = False) -> Splits:
    directory = locate_cifar10(root, explicit)
    parts = {split: [read_cifar_batch(directory / name) for name in names]
             for split, names in (("train", TRAIN_FILES), ("test", TEST_FILES))}
    (train_x, train_y), (test_x, test_y) = ((torch.cat([x for x, _ in p]), torch.cat([y for _, y in p]))
                                            for p in parts.values())
    return Splits(train_x, train_y, test_x, test_y, source=str(directory))
