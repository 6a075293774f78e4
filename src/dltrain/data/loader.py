"""Batches from whole-tensor data sets: uint8 storage, indexing by a seeded permutation, conversion,
augmentation and normalisation on the training device in whole batches.

Resident (the default where it fits): the uint8 set lives on the device and a batch is one gather.
Not resident: it stays in host memory; each batch is gathered into pinned memory and copied with
non_blocking=True, so the copy overlaps the GPU's work on the previous batch.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

Transform = Callable[[torch.Tensor], torch.Tensor]


class Normalizer:
    """x ↦ (x/255 − shift)/scale per channel, with the statistics of the training split only."""

    def __init__(self, train_x: torch.Tensor, mode: str):
        c = train_x.shape[1]
        x01 = train_x.transpose(0, 1).reshape(c, -1)
        if mode == "standardize":
            stats = [(ch.float().mean() / 255, ch.float().std() / 255) for ch in x01]
        elif mode == "minmax":
            stats = [(ch.min().float() / 255, (ch.max() - ch.min()).float().clamp_min(1) / 255) for ch in x01]
        else:  # none: raw pixel values, as the data set stores them
            stats = [(torch.tensor(0.0), torch.tensor(1 / 255))] * c
        self.shift = torch.stack([s for s, _ in stats]).view(1, c, 1, 1)
        self.scale = torch.stack([s for _, s in stats]).view(1, c, 1, 1)

    def to(self, device) -> "Normalizer":
        self.shift, self.scale = self.shift.to(device), self.scale.to(device)
        return self

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.shift) / self.scale


class BatchLoader:
    """Iterates (inputs, labels) batches on `device`. Shuffled loaders draw a fresh permutation each epoch
    from (seed, epoch), so the order is reproducible and resumable without saving generator state.
    With world_size > 1 each rank takes every world_size-th index of the same permutation (its shard)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device,
                 normalize: Normalizer, augment: Transform | None = None, shuffle: bool = False,
                 seed: int = 0, resident: bool = True, rank: int = 0, world_size: int = 1):
        self.device, self.resident = torch.device(device), resident
        if resident:
            x, y = x.to(self.device), y.to(self.device)
        self.x, self.y = x, y
        # A non_blocking copy is only asynchronous from pinned memory; pinning the gathered batch, not the
        # whole set, keeps the page-locked memory small (torch's host allocator reuses the buffers).
        self.pin = not resident and self.device.type == "cuda"
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.normalize, self.augment = normalize.to(self.device), augment
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """start_batch > 0 resumes mid-epoch: the first start_batch batches of this epoch's order are skipped
        without being gathered or augmented, so no random numbers are drawn for them."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return math.ceil(self._shard_size() / self.batch_size)

    def _shard_size(self) -> int:
        return len(range(self.rank, len(self.x), self.world_size))

    def _order(self) -> torch.Tensor:
        n = len(self.x)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        return order[self.rank::self.world_size].to(self.x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, size = self._order(), self.batch_size
        # Slices taken as they are needed: split() would make a tensor for every batch of the epoch up front,
        # ~1 ms per epoch at batch size 128, paid again by every shortened epoch (limit_train_batches).
        for start in range(self.start_batch * size, len(order), size):
            idx = order[start:start + size]
            # index_select copies whole rows (memcpy); x[idx] goes through the element-wise index kernel, 10x slower
            x, y = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.pin:
                x, y = x.pin_memory(), y.pin_memory()
            if not self.resident:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            x = x.float().div_(255)
            if self.augment is not None:
                x = self.augment(x)
            yield self.normalize(x), y
