"""Where the data sets come from: data.root (flat or torchvision's layout) → /usr/share/datasets → torchvision's
download into data.root, all exercised offline with tiny fake data sets served from 127.0.0.1; and
a clear error, with the ways to get the data, when every source fails. CIFAR-10's python batches likewise."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from hydra.utils import get_method

from dltrain.data.datasets import FASHION_MNIST, MNIST, SYSTEM_DATASETS, load_idx_splits
from dltrain.errors import DataError

STEMS = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fake_mnist(directory: Path, seed: int, n_train: int = 20, n_test: int = 10, gz: bool = True) -> dict:
    """The four IDX files of a tiny MNIST-like set, written by hand from the format; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": rng.integers(0, 10, n_test, dtype=np.uint8)}
    directory.mkdir(parents=True, exist_ok=True)
    for key, a in arrays.items():
        blob = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
        name = STEMS[key] + (".gz" if gz else "")
        (directory / name).write_bytes(gzip.compress(blob, mtime=0) if gz else blob)
    return arrays


def assert_splits_equal(splits, arrays):
    assert splits.train_x.dtype == torch.uint8 and splits.train_y.dtype == torch.int64
    assert np.array_equal(splits.train_x.numpy(), arrays["train_x"][:, None])
    assert np.array_equal(splits.test_x.numpy(), arrays["test_x"][:, None])
    assert splits.train_y.tolist() == arrays["train_y"].tolist()
    assert splits.test_y.tolist() == arrays["test_y"].tolist()


@pytest.fixture
def system(tmp_path, monkeypatch):
    """An empty stand-in for /usr/share/datasets."""
    path = tmp_path / "system"
    path.mkdir()
    monkeypatch.setattr("dltrain.data.datasets.SYSTEM_DATASETS", path)
    return path


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server (127.0.0.1, a free port) serving tmp_path/"serve": torchvision's downloader needs
    http(s) — it reads `response.length`, which file:// responses lack — and this keeps the test offline."""
    directory = tmp_path / "serve"
    directory.mkdir()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield directory, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def mirror(server, monkeypatch):
    """Point torchvision's MNIST and FashionMNIST mirrors at the local server, initially serving nothing.
    Call the returned function to publish a fake set there, with its md5s in the classes' resources."""
    path, url = server
    for cls in (torchvision.datasets.MNIST, torchvision.datasets.FashionMNIST):
        monkeypatch.setattr(cls, "mirrors", [url])

    def publish(seed: int) -> dict:
        arrays = fake_mnist(path, seed)
        for cls in (torchvision.datasets.MNIST, torchvision.datasets.FashionMNIST):
            monkeypatch.setattr(cls, "resources", [(f"{STEMS[k]}.gz", md5(path / f"{STEMS[k]}.gz"))
                                                   for k in ("train_x", "train_y", "test_x", "test_y")])
        return arrays

    return publish


def no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("must not download")
    monkeypatch.setattr("dltrain.data.datasets._download", fail)


@pytest.mark.parametrize("layout", ["flat", "torchvision", "plain files"])
def test_data_root_wins_over_the_system_directory(tmp_path, system, monkeypatch, layout):
    no_download(monkeypatch)
    root = tmp_path / "root"
    where = root / "FashionMNIST" / "raw" if layout == "torchvision" else root
    ours = fake_mnist(where, seed=1, gz=layout != "plain files")
    fake_mnist(system / "fashion-mnist", seed=2)
    assert_splits_equal(load_idx_splits(FASHION_MNIST, str(root)), ours)


def test_torchvision_layout_of_another_data_set_is_not_taken(tmp_path, system, monkeypatch):
    no_download(monkeypatch)
    root = tmp_path / "root"
    fake_mnist(root / "MNIST" / "raw", seed=1)          # MNIST, not Fashion-MNIST
    theirs = fake_mnist(system / "fashion-mnist", seed=2)
    assert_splits_equal(load_idx_splits(FASHION_MNIST, str(root)), theirs)


@pytest.mark.parametrize("root", ["empty", "missing", None])
def test_system_directory_is_second(tmp_path, system, monkeypatch, root):
    no_download(monkeypatch)
    if root == "empty":
        (tmp_path / "empty").mkdir()
    arrays = fake_mnist(system / "mnist", seed=3)
    splits = load_idx_splits(MNIST, str(tmp_path / root) if root else None)
    assert_splits_equal(splits, arrays)


def test_an_incomplete_root_falls_through_to_the_system_directory(tmp_path, system, monkeypatch):
    no_download(monkeypatch)
    fake_mnist(tmp_path / "root", seed=1)
    (tmp_path / "root" / "t10k-labels-idx1-ubyte.gz").unlink()
    arrays = fake_mnist(system / "fashion-mnist", seed=2)
    assert_splits_equal(load_idx_splits(FASHION_MNIST, str(tmp_path / "root")), arrays)


@pytest.mark.parametrize("source", [FASHION_MNIST, MNIST])
def test_download_into_data_root_is_last(tmp_path, system, mirror, source):
    arrays = mirror(seed=4)
    root = tmp_path / "root"
    splits = load_idx_splits(source, str(root))
    assert_splits_equal(splits, arrays)
    raw = root / source.torchvision_class / "raw"
    for stem in STEMS.values():
        assert (raw / f"{stem}.gz").is_file()
    # a second load reads what was downloaded: the mirror may be gone
    for f in (tmp_path / "serve").iterdir():
        f.unlink()
    assert_splits_equal(load_idx_splits(source, str(root)), arrays)


def test_download_with_a_wrong_checksum_fails_clearly(tmp_path, system, mirror, monkeypatch):
    mirror(seed=4)
    resources = torchvision.datasets.FashionMNIST.resources
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "resources",
                        [(name, "0" * 32) for name, _ in resources])
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_idx_splits(FASHION_MNIST, str(tmp_path / "root"))
    assert "download into" in str(info.value)


def test_when_everything_fails_the_error_says_where_it_looked_and_how_to_get_it(tmp_path, system, mirror):
    root = tmp_path / "root"
    (root).mkdir()
    fake_mnist(root, seed=0)
    (root / "train-labels-idx1-ubyte.gz").unlink()  # an incomplete copy
    with pytest.raises(DataError) as info:
        load_idx_splits(FASHION_MNIST, str(root))
    message = str(info.value)
    assert "Fashion-MNIST not found" in message
    assert str(root) in message and str(system / "fashion-mnist") in message
    assert "train-labels-idx1-ubyte" in message and "missing" in message  # what the incomplete copy lacks
    assert "no such directory" in message                                 # the system dir
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.root=" in message
    assert "Traceback" not in message


def test_without_data_root_nothing_is_downloaded(system, mirror):
    mirror(seed=4)
    with pytest.raises(DataError, match="data.root is not set") as info:
        load_idx_splits(MNIST, None)
    assert "apt-get install dataset-mnist" in str(info.value)


def test_data_configs_load_through_their_target(tmp_path, system, monkeypatch):
    from dltrain.config import compose_config

    no_download(monkeypatch)
    for option, seed in (("fashion_mnist", 5), ("mnist", 6)):
        arrays = fake_mnist(tmp_path / option, seed=seed)
        cfg = compose_config([f"data={option}", f"data.root={tmp_path / option}"])
        assert_splits_equal(get_method(cfg.data._target_)(cfg.data), arrays)


@pytest.mark.skipif(not (SYSTEM_DATASETS / "fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_the_real_default_data_set_loads():
    s = load_idx_splits(FASHION_MNIST, None)
    assert s.train_x.shape == (60000, 1, 28, 28) and s.train_x.dtype == torch.uint8
    assert s.test_x.shape == (10000, 1, 28, 28) and s.test_x.dtype == torch.uint8
    for y in (s.train_y, s.test_y):
        assert y.dtype == torch.int64
        assert torch.equal(y.unique(), torch.arange(10))
    assert torch.equal(s.train_y.bincount(), torch.full((10,), 6000))  # Fashion-MNIST is balanced
    assert 60 < s.train_x.float().mean() < 85                          # its mean pixel is about 72.9


# ---------------------------------------------------------------------------------------------- CIFAR-10

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_batch(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fake", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(), b"filenames": [b"x.png"] * n}


def fake_cifar(directory: Path, n: int = 4, protocol: int = 2) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    batches = {name: cifar_batch(i, n) for i, name in enumerate(CIFAR_FILES)}
    for name, entry in batches.items():
        (directory / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    return batches


def expected_cifar(batches):
    def stack(names):
        x = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
        return x, sum((batches[n][b"labels"] for n in names), [])
    return stack(CIFAR_FILES[:5]), stack(CIFAR_FILES[5:])


def assert_cifar_equal(splits, batches):
    (train_x, train_y), (test_x, test_y) = expected_cifar(batches)
    assert splits.train_x.shape == (20, 3, 32, 32) and splits.train_x.dtype == torch.uint8
    assert splits.test_x.shape == (4, 3, 32, 32)
    assert np.array_equal(splits.train_x.numpy(), train_x) and np.array_equal(splits.test_x.numpy(), test_x)
    assert splits.train_y.dtype == torch.int64
    assert splits.train_y.tolist() == train_y and splits.test_y.tolist() == test_y


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_reads_the_python_batches(tmp_path, protocol):
    from dltrain.data.cifar import load_cifar10

    batches = fake_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    assert_cifar_equal(load_cifar10(str(tmp_path)), batches)
    # channel planes: the first 1024 bytes are red, i.e. channel 0 row-major
    first = batches["data_batch_1"][b"data"][0]
    assert np.array_equal(load_cifar10(str(tmp_path)).train_x[0, 0].numpy().ravel(), first[:1024])


def test_cifar_through_the_config_and_datamodule(tmp_path):
    from dltrain.config import compose_config
    from dltrain.data import build_datamodule

    fake_cifar(tmp_path / "cifar-10-batches-py", n=8)
    cfg = compose_config(["data=cifar10", f"data.root={tmp_path}", "data.val_size=8", "data.batch_size=16"])
    assert list(cfg.data.in_shape) == [3, 32, 32] and cfg.data.num_classes == 10
    dm = build_datamodule(cfg)
    assert dm.in_shape == (3, 32, 32) and dm.num_classes == 10
    x, y = next(iter(dm.train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32
    assert sum(len(y) for _, y in dm.train) == 32 and sum(len(y) for _, y in dm.val) == 8


def test_cifar_truncated_batch_is_named(tmp_path):
    from dltrain.data.cifar import load_cifar10

    fake_cifar(tmp_path / "cifar-10-batches-py")
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        load_cifar10(str(tmp_path))
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("damage, expected", [
    (lambda e: e.update({b"data": e[b"data"][:, :3000]}), r"shape \[4, 3000\]"),
    (lambda e: e.update({b"data": e[b"data"].astype(np.float32)}), "float32"),
    (lambda e: e.update({b"labels": e[b"labels"][:3]}), "4 images but 3 labels"),
    (lambda e: e.update({b"labels": [0, 1, 2, 10]}), r"labels span 0\.\.10"),
    (lambda e: e.pop(b"labels"), "lack 'data' and/or 'labels'"),
])
def test_cifar_unexpected_content_is_named(tmp_path, damage, expected):
    from dltrain.data.cifar import load_cifar10

    batches = fake_cifar(tmp_path / "cifar-10-batches-py")
    entry = batches["test_batch"]
    damage(entry)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match=expected) as info:
        load_cifar10(str(tmp_path))
    assert str(bad) in str(info.value)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_cifar_refuses_pickles_that_would_run_code(tmp_path, capsys):
    from dltrain.data.cifar import read_cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        read_cifar_batch(path)
    assert "code ran" not in capsys.readouterr().out


def test_cifar_missing_batch_is_named(tmp_path):
    from dltrain.data.cifar import load_cifar10

    fake_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5: file not found"):
        load_cifar10(str(tmp_path))


@pytest.fixture
def cifar_mirror(tmp_path, server, monkeypatch):
    """torchvision's CIFAR10 URL pointed at a tar.gz of a fake cifar-10-batches-py on the local server."""
    cls = torchvision.datasets.CIFAR10
    serve, url = server
    monkeypatch.setattr(cls, "url", f"{url}cifar-10-python.tar.gz")

    def publish() -> dict:
        staging = tmp_path / "staging"
        batches = fake_cifar(staging / "cifar-10-batches-py")
        archive = serve / "cifar-10-python.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        digests = {name: md5(staging / "cifar-10-batches-py" / name) for name in CIFAR_FILES}
        monkeypatch.setattr(cls, "tgz_md5", md5(archive))
        monkeypatch.setattr(cls, "train_list", [[n, digests[n]] for n in CIFAR_FILES[:5]])
        monkeypatch.setattr(cls, "test_list", [[n, digests[n]] for n in CIFAR_FILES[5:]])
        return batches

    return publish


def test_cifar_download_into_data_root(tmp_path, cifar_mirror):
    from dltrain.data.cifar import load_cifar10

    batches = cifar_mirror()
    root = tmp_path / "root"
    assert_cifar_equal(load_cifar10(str(root)), batches)
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()


def test_cifar_offline_error_says_where_it_looked_and_how_to_get_it(tmp_path, cifar_mirror):
    from dltrain.data.cifar import load_cifar10

    root = tmp_path / "root"  # the mirror directory is empty: the download fails
    with pytest.raises(DataError) as info:
        load_cifar10(str(root))
    message = str(info.value)
    assert "CIFAR-10 not found" in message
    assert str(root / "cifar-10-batches-py") in message
    assert "download of http://127.0.0.1" in message and "failed" in message
    assert "tar xzf cifar-10-python.tar.gz" in message and "data.root=" in message


def test_cifar_download_with_a_bad_member_checksum_fails_clearly(tmp_path, cifar_mirror, monkeypatch):
    from dltrain.data.cifar import load_cifar10

    cifar_mirror()
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "test_list", [["test_batch", "0" * 32]])
    with pytest.raises(DataError, match="test_batch: missing or wrong checksum"):
        load_cifar10(str(tmp_path / "root"))


def test_cifar_reads_batches_pickled_by_numpy_1(tmp_path):
    # The official archive was pickled by numpy 1.x, whose arrays name numpy.core.multiarray._reconstruct;
    # numpy 2 moved it to numpy._core. Rewrite our protocol-2 pickle's GLOBAL to the old name.
    from dltrain.data.cifar import read_cifar_batch

    entry = cifar_batch(0, 3)
    blob = pickle.dumps(entry, protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in blob
    old = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    (tmp_path / "data_batch_1").write_bytes(old)
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    assert np.array_equal(x.numpy().reshape(3, -1), entry[b"data"]) and y.tolist() == entry[b"labels"]


def test_the_synthetic_data_set_does_not_depend_on_the_default_dtype():
    """Found as an order-dependent failure: a float64 test generated (and cached) another synthetic data set,
    and the runs after it in the same process trained and evaluated on that one."""
    from dltrain.config import compose_config
    from dltrain.data.datasets import synthetic

    data = compose_config(["data=synthetic"]).data
    plain = synthetic(data)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wide = synthetic(data)
    finally:
        torch.set_default_dtype(before)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(plain, name), getattr(wide, name)), name
