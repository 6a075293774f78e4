"""BatchLoader and Normalizer: normalisation with the training split's statistics only (checked against
float64 numbers computed here), and the epoch order: seeded, fresh each epoch, a permutation, sharded
disjointly across ranks, the same whether or not the data set is resident."""
from __future__ import annotations

import math

import pytest
import torch

from dltrain.data.loader import BatchLoader, Normalizer


def images(n=600, c=3, h=8, w=8, seed=0, offset=0):
    """uint8 images whose channels have clearly different means and spreads."""
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor([10, 60, 120]).view(1, 3, 1, 1)[:, :c] + offset
    span = torch.tensor([40, 190, 100]).view(1, 3, 1, 1)[:, :c]
    return (lo + torch.rand((n, c, h, w), generator=g) * span).round().clamp(0, 255).to(torch.uint8)


def cat_x(loader):
    return torch.cat([x for x, _ in loader])


def order_of(loader):
    """Which samples the loader yields, in order (the labels hold each sample's index)."""
    return torch.cat([y for _, y in loader]).tolist()


def loader(x, normalize="standardize", stats_from=None, **kwargs):
    norm = Normalizer(stats_from if stats_from is not None else x, normalize)
    return BatchLoader(x, torch.arange(len(x)), batch_size=kwargs.pop("batch_size", 64), device="cpu",
                       normalize=norm, **kwargs)


def per_channel(x):
    return x.transpose(0, 1).reshape(x.shape[1], -1).double()


def test_standardize_gives_the_training_split_mean_0_std_1_per_channel():
    train = images()
    out = per_channel(cat_x(loader(train, shuffle=True, seed=3, batch_size=37)))
    assert torch.allclose(out.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(out.std(1), torch.ones(3, dtype=torch.float64), atol=1e-4)


def test_standardize_applies_the_training_statistics_to_val_and_test():
    train, val = images(seed=0), images(n=200, seed=1, offset=30)  # val brighter than train
    raw = per_channel(train)
    mean, std = raw.mean(1).view(1, 3, 1, 1), raw.std(1).view(1, 3, 1, 1)
    out = cat_x(loader(val, stats_from=train))
    expected = (val.double() - mean) / std
    assert torch.allclose(out.double(), expected, atol=1e-4)
    assert per_channel(out).mean(1).min() > 0.2  # its own statistics would have centred it at 0


def test_minmax_maps_the_training_split_onto_0_1_and_val_with_the_same_numbers():
    train, val = images(seed=0), images(n=200, seed=1, offset=30)
    out = per_channel(cat_x(loader(train, "minmax", shuffle=True)))
    assert torch.allclose(out.min(1).values, torch.zeros(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out.max(1).values, torch.ones(3, dtype=torch.float64), atol=1e-6)
    raw = per_channel(train)
    lo, hi = raw.min(1).values.view(1, 3, 1, 1), raw.max(1).values.view(1, 3, 1, 1)
    val_out = cat_x(loader(val, "minmax", stats_from=train))
    assert torch.allclose(val_out.double(), (val.double() - lo) / (hi - lo), atol=1e-5)
    assert val_out.max() > 1  # the brighter val split is not squeezed into [0, 1] by its own extremes


def test_minmax_of_a_constant_channel_does_not_divide_by_zero():
    x = torch.full((10, 1, 4, 4), 7, dtype=torch.uint8)
    out = cat_x(loader(x, "minmax"))
    assert torch.isfinite(out).all() and torch.all(out == 0)


def test_none_gives_the_raw_pixel_values():
    x = images()
    out = cat_x(loader(x, "none"))
    assert torch.allclose(out, x.float(), atol=1e-3)
    assert out.max() > 200  # 0..255, not 0..1


def test_datamodule_normalises_every_split_with_the_training_split(fast_cfg):
    from dltrain.data import build_datamodule

    dm = build_datamodule(fast_cfg("data.normalize=standardize"))
    raw = per_channel(dm.train.x)  # the training split's uint8 tensor, as the loader holds it
    mean, std = raw.mean(1).view(1, -1, 1, 1), raw.std(1).view(1, -1, 1, 1)
    train = per_channel(cat_x(dm.train))
    assert abs(train.mean()) < 1e-4 and abs(train.std() - 1) < 1e-4
    for split in (dm.val, dm.test):
        expected = (split.x.double() - mean) / std
        assert torch.allclose(cat_x(split).double(), expected, atol=1e-4)


def test_the_validation_split_is_held_out_of_training_and_the_same_for_every_seed(fast_cfg):
    from dltrain.data import build_datamodule, split_validation

    x, y = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100)
    train_x, train_y, val_x, val_y = split_validation(x, y, 30)
    assert len(val_y) == 30 and len(train_y) == 70
    assert sorted(train_y.tolist() + val_y.tolist()) == list(range(100))   # disjoint, and nothing lost
    assert torch.equal(train_x.flatten().long(), train_y) and torch.equal(val_x.flatten().long(), val_y)
    a, b = build_datamodule(fast_cfg("seed=0")), build_datamodule(fast_cfg("seed=1"))
    assert torch.equal(a.val.x, b.val.x) and len(a.train.x) == 2048 - 256 and len(a.val.x) == 256
    train_rows = {bytes(row.numpy()) for row in a.train.x.flatten(1)}
    assert not any(bytes(row.numpy()) in train_rows for row in a.val.x.flatten(1))


def test_epoch_order_is_a_fresh_seeded_permutation():
    x = torch.zeros(103, 1, 2, 2, dtype=torch.uint8)
    a, b = loader(x, shuffle=True, seed=7, batch_size=10), loader(x, shuffle=True, seed=7, batch_size=10)
    epochs = []
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        order = order_of(a)
        assert sorted(order) == list(range(103))  # every sample exactly once
        assert order == order_of(b)                # same (seed, epoch): same order, in another loader too
        assert order == order_of(a)                # and when iterated again
        epochs.append(order)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    assert epochs[0] != list(range(103))
    other = loader(x, shuffle=True, seed=8, batch_size=10)
    assert order_of(other) != epochs[0]


def test_unshuffled_loaders_keep_the_stored_order_and_batch_sizes():
    x = torch.zeros(103, 1, 2, 2, dtype=torch.uint8)
    lo = loader(x, batch_size=10)
    lo.set_epoch(5)
    assert order_of(lo) == list(range(103))
    assert [len(y) for _, y in lo] == [10] * 10 + [3] and len(lo) == 11


@pytest.mark.parametrize("n", [100, 101])
def test_ranks_take_disjoint_shards_that_cover_the_set(n):
    x = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    shards = []
    for rank in (0, 1):
        lo = loader(x, shuffle=True, seed=2, batch_size=16, rank=rank, world_size=2)
        lo.set_epoch(4)
        shards.append(order_of(lo))
        assert len(lo) == math.ceil(len(shards[-1]) / 16)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(n))
    assert abs(len(shards[0]) - len(shards[1])) <= 1


def test_not_resident_gives_the_same_batches_as_resident():
    x = images(n=150)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    norm = Normalizer(x, "standardize")
    a, b = (BatchLoader(x, torch.arange(150), batch_size=32, device=device, normalize=norm, shuffle=True,
                        seed=1, resident=resident) for resident in (True, False))
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        batches_a, batches_b = list(a), list(b)
        assert len(batches_a) == len(batches_b) == 5
        for (xa, ya), (xb, yb) in zip(batches_a, batches_b):
            assert xa.device.type == xb.device.type == torch.device(device).type
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_augment_hook_sees_0_1_batches_before_normalisation():
    x = images(n=20)
    seen = []

    def record(batch):
        seen.append(batch.clone())
        return 1 - batch  # an observable change

    norm = Normalizer(x, "none")
    out = cat_x(BatchLoader(x, torch.arange(20), batch_size=8, device="cpu", normalize=norm, augment=record))
    raw = torch.cat(seen)
    assert torch.allclose(raw, x.float() / 255) and raw.max() <= 1
    assert torch.allclose(out, 255 - x.float(), atol=1e-3)
