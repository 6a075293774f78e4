"""Augmentation of whole training batches on the device (x in [0, 1], shape N×C×H×W).

Every transform draws one random parameter per sample and applies them all at once with tensor ops (no
per-sample Python), on whatever device the batch is on. The random numbers come from torch's global
generator for that device, which the trainer seeds: the same seed gives the same augmented batches.

Order in a batch: crop → flip → rotation → affine (scale, shear, translate) → color jitter (each only when it
is on).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    """n draws from U[lo, hi] as an N×1×1×1 tensor on like's device and dtype."""
    return (lo + (hi - lo) * torch.rand(n, device=like.device, dtype=like.dtype)).view(n, 1, 1, 1)


def random_flip(x: torch.Tensor, p: float) -> torch.Tensor:
    """Mirror each image left↔right with probability p."""
    return crop_and_flip(x, 0, p)


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Pad by `padding` zero pixels on every side, then cut an H×W window at a random offset per image."""
    return crop_and_flip(x, padding, 0.0)


def crop_and_flip(x: torch.Tensor, padding: int, p: float) -> torch.Tensor:
    """random_crop, then random_flip, as one gather: output pixel (r, j) of image i comes from pixel
    (dy_i + r, dx_i + j) of the zero-padded image, or (dy_i + r, dx_i + W−1−j) where i is mirrored.

    One pass over the batch instead of four (two gathers, a flip and a select): this is most of the data
    path's time on the CPU. It draws the same random numbers, in the same order, as the two steps apart."""
    if padding <= 0 and not p:
        return x
    n, c, h, w = x.shape
    if padding > 0:
        span = 2 * padding + 1
        dy = torch.randint(span, (n, 1, 1), device=x.device)
        dx = torch.randint(span, (n, 1, 1), device=x.device)
        x = F.pad(x, (padding, padding, padding, padding))
    else:
        dy = dx = torch.zeros((n, 1, 1), dtype=torch.long, device=x.device)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    if p:
        flip = torch.rand(n, device=x.device).view(n, 1, 1) < p
        cols = torch.where(flip, w - 1 - cols, cols)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    index = (dy + rows) * x.shape[-1] + dx + cols  # N×H×W: flat source positions in each padded image
    out = x.reshape(n, c, -1).gather(2, index.view(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w)


def rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate image i by angles[i] radians about its centre (bilinear, zeros outside); a positive angle turns
    the picture counter-clockwise as displayed (row 0 at the top), as torch.rot90 does for 90°."""
    n, _, h, w = x.shape
    cos, sin = angles.cos(), angles.sin()
    zero = torch.zeros_like(angles)
    # affine_grid works in coordinates normalised to [-1, 1] per axis; the h/w factors keep the rotation rigid
    # in pixels when the image is not square.
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1),
                         torch.stack([sin * w / h, cos, zero], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_rotation(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image by an angle drawn uniformly from [−degrees, degrees]."""
    angles = (torch.rand(len(x), device=x.device) * 2 - 1) * math.radians(degrees)
    return rotate(x, angles)


def affine(x: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, tx: torch.Tensor,
           ty: torch.Tensor) -> torch.Tensor:
    """Image i's content zoomed by scale[i] about the centre, sheared horizontally by shear[i] radians (a pixel
    `y` rows below the centre moves tan(shear)·y columns right) and shifted by (tx[i]·W, ty[i]·H) pixels
    (right, down), as one affine_grid/grid_sample pass (bilinear, zeros outside).

    In pixels about the centre the forward map is p ↦ A·p + t with A = s·[[1, tan φ], [0, 1]]; grid_sample
    needs each output position's source, A⁻¹(p − t) = (1/s)·[[1, −tan φ], [0, 1]]·(p − t), written in the
    [-1, 1] coordinates of each axis (the h/w factor keeps the shear an angle in pixels on a non-square image;
    a shift by the whole width is 2 there)."""
    n, _, h, w = x.shape
    k = shear.tan()
    inv = 1.0 / scale
    zero = torch.zeros_like(scale)
    tx_n, ty_n = 2 * tx, 2 * ty
    row0 = torch.stack([inv, -inv * k * h / w, -inv * (tx_n - k * h / w * ty_n)], 1)
    row1 = torch.stack([zero, inv, -inv * ty_n], 1)
    theta = torch.stack([row0, row1], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: torch.Tensor, scale: float = 0.0, shear: float = 0.0, translate: float = 0.0) -> torch.Tensor:
    """Per image a zoom from U[1−scale, 1+scale], a shear angle from U[−shear, shear] degrees and a shift of
    U[−translate, translate] × width and × height, drawn in that order, applied as one transform (`affine`)."""
    n = len(x)

    def draw(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, device=x.device, dtype=torch.float32)

    s = draw(1 - scale, 1 + scale)
    phi = draw(-1.0, 1.0) * math.radians(shear)
    tx, ty = draw(-translate, translate), draw(-translate, translate)
    return affine(x, s, phi, tx, ty)


def color_jitter(x: torch.Tensor, brightness: float = 0.0, contrast: float = 0.0) -> torch.Tensor:
    """Per image: scale by a brightness factor from U[1−b, 1+b], then stretch around the image's mean
    (over channels and pixels) by a contrast factor from U[1−c, 1+c]; clamp to [0, 1] after each step."""
    n = len(x)
    if brightness:
        x = (x * _uniform(n, max(0.0, 1 - brightness), 1 + brightness, x)).clamp_(0, 1)
    if contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * _uniform(n, max(0.0, 1 - contrast), 1 + contrast, x) + mean).clamp_(0, 1)
    return x


class BatchAugment:
    """The configured augmentations as one callable on a batch."""

    def __init__(self, flip: float = 0.0, crop: int = 0, rotation: float = 0.0, brightness: float = 0.0,
                 contrast: float = 0.0, scale: float = 0.0, shear: float = 0.0, translate: float = 0.0):
        if crop != int(crop):
            raise ValueError(f"augment.crop={crop!r} must be a whole number of pixels")
        self.flip, self.crop, self.rotation = float(flip), int(crop), float(rotation)
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.scale, self.shear, self.translate = float(scale), float(shear), float(translate)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop or self.flip:
            x = crop_and_flip(x, self.crop, self.flip)
        if self.rotation:
            x = random_rotation(x, self.rotation)
        if self.scale or self.shear or self.translate:
            x = random_affine(x, self.scale, self.shear, self.translate)
        if self.brightness or self.contrast:
            x = color_jitter(x, self.brightness, self.contrast)
        return x

    def __repr__(self) -> str:
        on = {k: v for k, v in vars(self).items() if v}
        return f"BatchAugment({', '.join(f'{k}={v}' for k, v in on.items())})"


def build_augment(cfg: DictConfig) -> BatchAugment | None:
    """None when every augmentation is off, else the callable the training loader applies to each batch."""
    keys = ("flip", "crop", "rotation", "brightness", "contrast", "scale", "shear", "translate")
    values = {k: cfg.get(k) or 0 for k in keys}
    if not any(values.values()):
        return None
    return BatchAugment(**values)
