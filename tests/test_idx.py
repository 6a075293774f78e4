"""The IDX reader: round trips, and every kind of damaged file becomes a DataError that names the file and
says what is wrong (never a numpy/reshape traceback)."""
from __future__ import annotations

import contextlib
import gzip
import re
import struct

import numpy as np
import pytest
import torch

from dltrain.data.datasets import FASHION_MNIST, load_idx_splits
from dltrain.data.idx import read_idx, write_idx
from dltrain.errors import DataError


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file built by hand from the format's definition (independent of write_idx)."""
    return bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5) * 4
LABELS = np.array([7, 0, 9, 3], dtype=np.uint8)


@contextlib.contextmanager
def raises_naming(path, *patterns):
    """Expect a DataError whose message names `path` and matches each of `patterns`."""
    with pytest.raises(DataError) as info:
        yield
    message = str(info.value)
    assert str(path) in message, message
    for pattern in patterns:
        assert re.search(pattern, message, re.I), f"{pattern!r} not in {message!r}"


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_reads_hand_built_3d_files_plain_and_gzip(tmp_path, name):
    blob = idx_bytes(IMAGES)
    (tmp_path / name).write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
    t = read_idx(tmp_path / name)
    assert t.dtype == torch.uint8 and t.shape == (3, 4, 5)
    assert np.array_equal(t.numpy(), IMAGES)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_reads_hand_built_1d_files_plain_and_gzip(tmp_path, name):
    blob = idx_bytes(LABELS)
    (tmp_path / name).write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
    assert read_idx(tmp_path / name).tolist() == [7, 0, 9, 3]


def test_reads_big_endian_wider_types(tmp_path):
    values = np.array([[1, -2], [300_000, -400_000]], dtype=">i4")
    (tmp_path / "f").write_bytes(idx_bytes(values, 0x0C))
    t = read_idx(tmp_path / "f")
    assert t.dtype == torch.int32 and t.tolist() == [[1, -2], [300_000, -400_000]]


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_write_then_read_round_trip(tmp_path, name):
    x = torch.randint(0, 256, (6, 3, 2), dtype=torch.uint8)
    write_idx(tmp_path / name, x)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert (gzip.decompress(raw) if name.endswith(".gz") else raw) == idx_bytes(x.numpy())
    assert torch.equal(read_idx(tmp_path / name), x)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(100))  # e.g. a zip file
    with raises_naming(path, "magic number", "50 4b 03 04"):
        read_idx(path)


def test_unknown_type_code(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 2) + b"ab")
    with raises_naming(path, "magic number"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    path = tmp_path / ("f.gz" if gz else "f")
    blob = idx_bytes(IMAGES)[:-7]
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with raises_naming(path, "truncated", r"\[3, 4, 5\]", "7 missing"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(idx_bytes(IMAGES)[:9])  # magic says 3 dimensions, only one and a bit follow
    with raises_naming(path, "truncated header"):
        read_idx(path)


def test_extra_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(idx_bytes(IMAGES) + b"junk")
    with raises_naming(path, "4 unexpected bytes"):
        read_idx(path)


def test_absurd_header_is_not_an_overflow_or_memory_error(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31) + b"x")
    with raises_naming(path, "truncated"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "f.gz"
    good = gzip.compress(idx_bytes(IMAGES))
    path.write_bytes(good[:10] + bytes(b ^ 0xFF for b in good[10:]))
    with raises_naming(path, "gzip"):
        read_idx(path)


def test_cut_off_gzip(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(idx_bytes(IMAGES))[:-12])
    with raises_naming(path, "gzip"):
        read_idx(path)


def test_empty_file(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(b"")
    with raises_naming(path, "empty"):
        read_idx(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope-idx3-ubyte.gz"
    with raises_naming(path, "not found"):
        read_idx(path)


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "d").mkdir()
    with raises_naming(tmp_path / "d", "directory"):
        read_idx(tmp_path / "d")


def write_set(directory, n_train=6, n_test=4, train_labels=None, test_images=None):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": train_labels if train_labels is not None else rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": test_images if test_images is not None else rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in files.items():
        (directory / name).write_bytes(gzip.compress(idx_bytes(array)))
    return files


def test_mismatched_image_and_label_counts_name_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("dltrain.data.datasets.SYSTEM_DATASETS", tmp_path / "system")
    write_set(tmp_path / "root", train_labels=np.zeros(5, np.uint8))  # 6 images, 5 labels
    with raises_naming(tmp_path / "root", "6 train images but 5 train labels"):
        load_idx_splits(FASHION_MNIST, str(tmp_path / "root"))


def test_labels_out_of_range_name_the_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("dltrain.data.datasets.SYSTEM_DATASETS", tmp_path / "system")
    write_set(tmp_path / "root", train_labels=np.array([0, 1, 2, 3, 4, 12], np.uint8))
    with raises_naming(tmp_path / "root", "labels span 0..12"):
        load_idx_splits(FASHION_MNIST, str(tmp_path / "root"))


def test_train_and_test_image_sizes_must_agree(tmp_path, monkeypatch):
    monkeypatch.setattr("dltrain.data.datasets.SYSTEM_DATASETS", tmp_path / "system")
    write_set(tmp_path / "root", test_images=np.zeros((4, 32, 32), np.uint8))
    with raises_naming(tmp_path / "root", r"\[28, 28\].*\[32, 32\]"):
        load_idx_splits(FASHION_MNIST, str(tmp_path / "root"))


def test_a_damaged_file_in_the_set_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("dltrain.data.datasets.SYSTEM_DATASETS", tmp_path / "system")
    write_set(tmp_path / "root")
    bad = tmp_path / "root" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-30])
    with raises_naming(bad, "gzip"):
        load_idx_splits(FASHION_MNIST, str(tmp_path / "root"))
