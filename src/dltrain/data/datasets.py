"""Data sets as whole uint8 tensors (N, C, H, W) plus int64 labels: no per-sample Python anywhere.

Each loader takes the `data` config node and returns `Splits`. The MNIST family is found in this order:
`data.root` → Debian's `/usr/share/datasets/<name>/` → torchvision's download into `data.root`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from dltrain.data.idx import DataError, read_idx

SYSTEM_DATASETS = Path("/usr/share/datasets")


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor


@dataclass(frozen=True)
class IdxSource:
    title: str             # as people write it
    debian_name: str       # /usr/share/datasets/<debian_name>, package dataset-<debian_name>
    torchvision_class: str  # torchvision.datasets.<class> downloads it


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


def _idx_dir(directory: Path) -> Path | None:
    """`directory` itself or torchvision's layout below it (<Class>/raw), if all four files are there."""
    for candidate in (directory, *directory.glob("*/raw")):
        if all(_find(candidate, stem) for stem in IDX_FILES.values()):
            return candidate
    return None


def _download(source: IdxSource, root: Path) -> Path:
    import torchvision.datasets

    getattr(torchvision.datasets, source.torchvision_class)(str(root), train=True, download=True)
    getattr(torchvision.datasets, source.torchvision_class)(str(root), train=False, download=True)
    found = _idx_dir(root)
    if found is None:
        raise DataError(f"torchvision reported success but no IDX files are under {root}")
    return found


def locate(source: IdxSource, root: str | None) -> Path:
    searched = [Path(root)] if root else []
    searched.append(SYSTEM_DATASETS / source.debian_name)
    for directory in searched:
        found = _idx_dir(directory)
        if found is not None:
            return found
    if not root:
        raise DataError(f"{source.title} not found in {searched[-1]} and data.root is not set, "
                        f"so nothing can be downloaded")
    try:
        return _download(source, Path(root))
    except DataError:
        raise
    except Exception as e:  # no network, a proxy, a broken mirror: say what to do instead
        raise DataError(
            f"{source.title} not found. Looked in: {', '.join(str(d) for d in searched)}; "
            f"the download into {root} failed ({type(e).__name__}: {e}).\n"
            f"Get it with one of:\n"
            f"  sudo apt-get install dataset-{source.debian_name}      # Debian/Ubuntu, puts it in "
            f"{SYSTEM_DATASETS / source.debian_name}\n"
            f"  python train.py data.root=/path/with/the/four/ubyte.gz/files\n"
            f"  (or run once with network access: torchvision downloads it into {root})"
        ) from None


def load_idx_splits(source: IdxSource, root: str | None) -> Splits:
    directory = locate(source, root)
    t = {key: read_idx(_find(directory, stem)) for key, stem in IDX_FILES.items()}
    for split in ("train", "test"):
        x, y = t[f"{split}_x"], t[f"{split}_y"]
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DataError(f"{directory}: {split} images {list(x.shape)} and labels {list(y.shape)} do not match")
    return Splits(t["train_x"].unsqueeze(1), t["train_y"].long(), t["test_x"].unsqueeze(1), t["test_y"].long())


def fashion_mnist(cfg: DictConfig) -> Splits:
    return load_idx_splits(FASHION_MNIST, cfg.root)


def mnist(cfg: DictConfig) -> Splits:
    return load_idx_splits(MNIST, cfg.root)


def synthetic(cfg: DictConfig) -> Splits:
    """Learnable and seeded: each class is a fixed faint random pattern on mid-grey; samples add noise.
    Faint enough that a model needs a few epochs, so that training choices still show differences."""
    g = torch.Generator().manual_seed(1234)
    shape = tuple(cfg.in_shape)
    templates = 0.5 + 0.1 * torch.randn((cfg.num_classes, *shape), generator=g)

    def sample(n: int):
        y = torch.randint(cfg.num_classes, (n,), generator=g)
        x = templates[y] + cfg.noise * torch.randn((n, *shape), generator=g)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = sample(cfg.train_size)
    test_x, test_y = sample(cfg.test_size)
    return Splits(train_x, train_y, test_x, test_y)
