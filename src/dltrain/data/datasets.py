"""Data sets as whole uint8 tensors (N, C, H, W) plus int64 labels: no per-sample Python anywhere.

Each loader takes the `data` config node and returns `Splits`. The MNIST family is found in this order:
`data.root` (the four IDX files flat, or torchvision's `<Class>/raw` layout below it) → Debian's
`/usr/share/datasets/<name>/` → torchvision's download into `data.root`. A `data.root` the user named (not the
default `${paths.data_dir}/<name>`) is the only place looked in, and nothing is downloaded into it: never a
silent fall-back to another copy. CIFAR-10 lives in cifar.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dltrain.data.cifar import load_cifar10
from dltrain.data.idx import read_idx
from dltrain.data.splits import Splits
from dltrain.errors import DataError

SYSTEM_DATASETS = Path("/usr/share/datasets")


@dataclass(frozen=True)
class IdxSource:
    title: str             # as people write it
    debian_name: str       # /usr/share/datasets/<debian_name>, package dataset-<debian_name>
    torchvision_class: str  # torchvision.datasets.<class> downloads it
    num_classes: int = 10


FASHION_MNIST = IdxSource("Fashion-MNIST", "fashion-mnist", "FashionMNIST")
MNIST = IdxSource("MNIST", "mnist", "MNIST")

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _candidates(source: IdxSource, directory: Path) -> tuple[Path, Path]:
    """`directory` itself, then torchvision's layout below it (<Class>/raw)."""
    return directory, directory / source.torchvision_class / "raw"


def _idx_dir(source: IdxSource, directory: Path) -> Path | None:
    """The first candidate directory that holds all four files, if any."""
    for candidate in _candidates(source, directory):
        if all(_find(candidate, stem) for stem in IDX_FILES.values()):
            return candidate
    return None


def _what_is_there(source: IdxSource, directory: Path) -> str:
    """`directory` and why it did not qualify, for the not-found message."""
    if not directory.is_dir():
        return f"{directory} (no such directory)"
    partial = [(c, [s for s in IDX_FILES.values() if not _find(c, s)]) for c in _candidates(source, directory)]
    partial = [(c, missing) for c, missing in partial if len(missing) < len(IDX_FILES)]
    if not partial:
        return f"{directory} (none of the four IDX files)"
    c, missing = partial[0]
    return f"{c} (incomplete: {', '.join(m + '[.gz]' for m in missing)} missing)"


def _download(source: IdxSource, root: Path) -> Path:
    import torchvision.datasets

    # One construction downloads all four files (train and test) into root/<Class>/raw and checks their md5.
    getattr(torchvision.datasets, source.torchvision_class)(str(root), train=False, download=True)
    found = _idx_dir(source, root)
    if found is None:
        raise DataError(f"torchvision reported success but the four IDX files are not under {root}")
    return found


def locate(source: IdxSource, root: str | None, explicit: bool = False) -> Path:
    """The directory holding the four IDX files of `source`, downloading them into `root` as a last resort.
    An `explicit` root (one the user named, not the default) is the only place looked in, and nothing is
    downloaded into it: it names the files to use, and a fall-back would silently train on others."""
    searched = [Path(root)] if root else []
    if not (explicit and root):
        searched.append(SYSTEM_DATASETS / source.debian_name)
    for directory in searched:
        found = _idx_dir(source, directory)
        if found is not None:
            return found
    if not root:
        failure = "nothing was downloaded because data.root is not set"
    elif explicit:
        raise DataError(f"data.root={root} holds no {source.title}: {_what_is_there(source, Path(root))}.\n"
                        f"Put the four IDX files there; or leave data.root unset to read "
                        f"{SYSTEM_DATASETS / source.debian_name} (sudo apt-get install dataset-{source.debian_name}) "
                        f"or download into paths.data_dir")
    else:
        try:
            return _download(source, Path(root))
        except DataError:
            raise
        except Exception as e:  # no network, a proxy, a broken mirror, a bad checksum: say what to do instead
            reason = " ".join(str(e).split())
            failure = f"the download into {root} failed ({type(e).__name__}: {reason})"
    looked = "\n".join(f"  {_what_is_there(source, d)}" for d in searched)
    raise DataError(
        f"{source.title} not found. Looked in:\n{looked}\nand {failure}.\n"
        f"Get it with one of:\n"
        f"  sudo apt-get install dataset-{source.debian_name}      # Debian/Ubuntu: puts it in "
        f"{SYSTEM_DATASETS / source.debian_name}\n"
        f"  python train.py data.root=/dir/with/the/four/idx-ubyte.gz/files\n"
        f"  run once with network access, data.root at its default: torchvision downloads it into {root or 'data.root'}"
    )


def load_idx_splits(source: IdxSource, root: str | None, explicit: bool = False) -> Splits:
    directory = locate(source, root, explicit)
    t = {key: read_idx(_find(directory, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = t[f"{split}_x"], t[f"{split}_y"]
        if x.dim() != 3 or x.dtype != torch.uint8:
            raise DataError(f"{directory}: {split} images are {x.dtype} {list(x.shape)}, expected uint8 N×H×W")
        if y.dim() != 1 or y.dtype.is_floating_point:
            raise DataError(f"{directory}: {split} labels are {y.dtype} {list(y.shape)}, expected integers of shape N")
        if len(x) != len(y):
            raise DataError(f"{directory}: {len(x)} {split} images but {len(y)} {split} labels")
        if len(y) and (y.min() < 0 or y.max() >= source.num_classes):
            raise DataError(f"{directory}: {split} labels span {int(y.min())}..{int(y.max())}, "
                            f"expected 0..{source.num_classes - 1}")
    if t["train_x"].shape[1:] != t["test_x"].shape[1:]:
        raise DataError(f"{directory}: train images are {list(t['train_x'].shape[1:])} but test images "
                        f"{list(t['test_x'].shape[1:])}")
    return Splits(t["train_x"].unsqueeze(1), t["train_y"].long(), t["test_x"].unsqueeze(1), t["test_y"].long(),
                  source=str(directory))


def explicit_root(cfg: DictConfig) -> bool:
    """Whether data.root was named by the user: the default is an interpolation of paths.data_dir."""
    return cfg.get("root") is not None and not OmegaConf.is_interpolation(cfg, "root")


def fashion_mnist(cfg: DictConfig) -> Splits:
    return load_idx_splits(FASHION_MNIST, cfg.root, explicit_root(cfg))


def mnist(cfg: DictConfig) -> Splits:
    return load_idx_splits(MNIST, cfg.root, explicit_root(cfg))


def cifar10(cfg: DictConfig) -> Splits:
    return load_cifar10(cfg.root, explicit_root(cfg))


def synthetic(cfg: DictConfig) -> Splits:
    """Learnable and seeded: each class is a fixed faint random pattern on mid-grey; samples add noise.
    Faint enough that a model needs a few epochs, so that training choices still show differences."""
    g = torch.Generator().manual_seed(1234)
    shape = tuple(cfg.in_shape)
    # float32 always: randn draws other numbers in another dtype, and the data must not depend on the process's
    # default dtype (a run from Python under float64 would otherwise cache a different data set)
    templates = 0.5 + 0.1 * torch.randn((cfg.num_classes, *shape), generator=g, dtype=torch.float32)

    def sample(n: int):
        y = torch.randint(cfg.num_classes, (n,), generator=g)
        x = templates[y] + cfg.noise * torch.randn((n, *shape), generator=g, dtype=torch.float32)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = sample(cfg.train_size)
    test_x, test_y = sample(cfg.test_size)
    return Splits(train_x, train_y, test_x, test_y, source="generated (data=synthetic)")
