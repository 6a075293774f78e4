"""Per-layer diagnostics (callbacks/diagnostics.py): values checked against direct computations on tiny
hand-built networks, layer naming, health checks, and a real run's tags, histograms and warnings."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltrain.callbacks.diagnostics import Diagnostics
from dltrain.diagnostics import activation_stats, find_layers, health_warnings
from dltrain.models.mlp import MLP


def tiny_mlp(activation=nn.ReLU, depth=2, width=8, features=6):
    torch.manual_seed(0)
    return MLP(in_shape=[features], num_classes=3, depth=depth, width=width, activation=activation)


def fake_trainer(model):
    logged = {}
    return SimpleNamespace(model=model, state=SimpleNamespace(step=0), callbacks=[],
                           cfg=OmegaConf.create({"trainer": {"compile": False}}),
                           log=lambda scalars, step: logged.update(scalars), logged=logged)


def one_step(model, diag, trainer, lr=0.1, x=None):
    """What the trainer does around one optimizer step, with the callback's hooks."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x = torch.randn(32, 6) if x is None else x
    y = torch.randint(0, 3, (len(x),))
    diag.on_train_step_start(trainer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    trainer.state.step += 1
    diag.on_train_step_end(trainer)
    return before


def test_dead_relu_layer_reports_dead_frac_one_and_grad_and_update_match_direct_computation():
    model = tiny_mlp()
    with torch.no_grad():
        model.backbone.block1[0].bias.fill_(-100.0)   # block1's pre-activations all negative: every unit dead
    diag, trainer = Diagnostics(every_n_steps=100, histograms=False), fake_trainer(model)
    diag.on_fit_start(trainer)
    before = one_step(model, diag, trainer)
    got = trainer.logged
    assert got["diag/block1/dead_frac"] == 1.0
    assert got["diag/block0/dead_frac"] < 0.5
    assert "diag/block0/saturated_frac" not in got          # ReLU is unbounded above: no saturation tag
    for name, layer in (("block0", model.backbone.block0[0]), ("head", model.head)):
        w = layer.weight
        assert got[f"diag/{name}/grad_norm"] == pytest.approx(float(w.grad.norm()), rel=1e-5)
        w0 = before[[n for n, p in model.named_parameters() if p is w][0]]
        assert got[f"diag/{name}/update_ratio"] == pytest.approx(float((w.detach() - w0).norm() / w0.norm()), rel=1e-5)
    assert not diag.hooks                                    # hooks are gone after the step
    assert any("dead units" in w and "block1" in w for w in diag.warnings)


def test_update_ratio_is_the_change_over_the_weights_before_the_step():
    """A step that triples every weight: ‖3W − W‖ / ‖W‖ = 2 exactly (over the new weights it would read 2/3)."""
    model = tiny_mlp()
    diag, trainer = Diagnostics(histograms=False), fake_trainer(model)
    diag.on_fit_start(trainer)
    diag.on_train_step_start(trainer)
    nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    trainer.state.step += 1
    diag.on_train_step_end(trainer)
    for name in ("block0", "block1", "head"):
        assert trainer.logged[f"diag/{name}/update_ratio"] == pytest.approx(2.0, rel=1e-6)


def test_saturated_tanh_reports_saturated_frac_near_one():
    model = tiny_mlp(activation=nn.Tanh)
    with torch.no_grad():
        model.backbone.block0[0].weight.mul_(200.0)
    diag, trainer = Diagnostics(histograms=False), fake_trainer(model)
    diag.on_fit_start(trainer)
    one_step(model, diag, trainer)
    assert trainer.logged["diag/block0/saturated_frac"] > 0.95
    assert any("saturated" in w and "block0" in w for w in diag.warnings)
    assert not any("dead units" in w for w in diag.warnings)  # tanh: saturation is its failure mode, not "dead"


def test_only_diagnostic_steps_are_hooked_and_logged():
    model = tiny_mlp()
    diag, trainer = Diagnostics(every_n_steps=3, histograms=False), fake_trainer(model)
    diag.on_fit_start(trainer)
    steps = []
    for _ in range(7):
        trainer.logged.clear()
        one_step(model, diag, trainer)
        if trainer.logged:
            steps.append(trainer.state.step)
    assert steps == [1, 3, 6]
    off = Diagnostics(every_n_steps=0)
    assert not any(off.due(s) for s in range(1, 50))


def test_dead_frac_counts_units_not_elements():
    """A unit is dead when it is never > 0 over the whole batch; a conv unit is a channel. The data make the
    per-element count differ: channel 1 is mostly negative but fires once, so it is alive."""
    out = -torch.rand(4, 3, 5, 5)         # every element ≤ 0
    out[2, 1, 3, 4] = 0.5                 # channel 1 fires at one position of one sample
    out[:, 2] = torch.rand(4, 5, 5) + 0.1  # channel 2 fires everywhere
    assert float(activation_stats(out, None)["dead_frac"]) == pytest.approx(1 / 3)   # per element: ~0.67
    flat = -torch.rand(8, 4)              # (batch, units): unit 3 fires for one sample
    flat[5, 3] = 1.0
    assert float(activation_stats(flat, None)["dead_frac"]) == 0.75                  # per element: 31/32


def test_saturated_frac_counts_outputs_within_one_percent_of_a_bound():
    sat = activation_stats(torch.tensor([[0.999, -0.995, 0.5, 0.0]]), (-1.0, 1.0))["saturated_frac"]
    assert float(sat) == 0.5
    sat = activation_stats(torch.tensor([[0.999, -0.995, 0.5, 0.0]]), (-1.0, 1.0))["saturated_frac"]
    assert float(sat) == 0.5


def test_layer_names_are_readable_for_every_architecture():
    from dltrain.models.cnn import CNN
    from dltrain.models.resnet import ResNet

    weights, acts = find_layers(tiny_mlp(depth=3))
    assert list(weights) == ["block0", "block1", "block2", "head"] and list(acts) == ["block0", "block1", "block2"]
    weights, acts = find_layers(CNN(in_shape=[1, 8, 8], num_classes=3, channels=[4, 4], hidden=8, activation=nn.ReLU))
    assert list(weights) == ["conv0", "conv1", "fc", "head"]
    weights, acts = find_layers(ResNet(in_shape=[1, 8, 8], num_classes=3, depth=1, width=4, activation=nn.ReLU))
    assert list(weights)[0] == "stem" and "stage1.block0.conv1" in weights and list(weights)[-1] == "head"
    assert "stage1.block0.act1" in acts


def test_health_checks():
    names = ["block0", "block1", "head"]
    kinds = lambda scalars, acts=(): {k for k, _, _ in health_warnings(scalars, names, list(acts))}  # noqa: E731
    assert kinds({"diag/block0/grad_norm": 1e-6, "diag/block1/grad_norm": 1e-3, "diag/head/grad_norm": 1.0}) == {"vanishing"}
    assert kinds({"diag/block0/grad_norm": 5e3, "diag/head/grad_norm": 1.0}) == {"exploding"}
    assert kinds({"diag/block0/grad_norm": float("nan"), "diag/head/grad_norm": 1.0}) == {"exploding"}
    assert kinds({"diag/block0/grad_norm": 0.5, "diag/block1/grad_norm": 0.2, "diag/head/grad_norm": 1.0}) == set()
    assert kinds({"diag/block1/update_ratio": 1e-7, "diag/head/update_ratio": 1e-3}) == {"update_ratio"}
    assert kinds({"diag/block1/update_ratio": 0.5}) == {"update_ratio"}
    assert kinds({"diag/block0/act_std": 1.0, "diag/block1/act_std": 1e-4}, ["block0", "block1"]) == {"vanishing_acts"}
    assert kinds({"diag/block0/dead_frac": 0.7, "diag/block1/saturated_frac": 0.9}) == {"dead", "saturated"}


def test_a_real_run_logs_diag_tags_histograms_and_warnings(tmp_path, fast_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dltrain.trainer import Trainer

    cfg = fast_cfg("trainer.fast_dev_run=true", "model.depth=4", "activation=tanh", "init=normal",
                   output_dir=tmp_path / "run")
    result = Trainer(cfg).fit()
    for tag in ("diag/block0/act_mean", "diag/block0/act_std", "diag/block0/dead_frac", "diag/block3/saturated_frac",
                "diag/block0/grad_norm", "diag/head/grad_norm", "diag/head/update_ratio"):
        assert tag in result["final"], tag
    assert any("vanishing activations" in w for w in result["warnings"])       # std 0.01 init, 4 tanh layers
    log = (tmp_path / "run" / "train.log").read_text()
    assert "health:" in log and "vanishing activations" in log.split("summary")[-1]
    acc = EventAccumulator(str(tmp_path / "run"), size_guidance={"histograms": 0})
    acc.Reload()
    hists = acc.Tags()["histograms"]
    assert {"diag/block0/weight", "diag/block0/grad", "diag/block0/act"} <= set(hists)

    off = Trainer(fast_cfg("trainer.fast_dev_run=true", "trainer.diagnostics_every_n_steps=0",
                           output_dir=tmp_path / "off")).fit()
    assert not any(k.startswith("diag/") for k in off["final"]) and "warnings" not in off


def test_histograms_bin_like_numpy_and_skip_non_finite_samples():
    import numpy as np

    from dltrain.diagnostics import HISTOGRAM_BINS, histograms, thin

    g = torch.Generator().manual_seed(0)
    wide = torch.randn(300, 50, generator=g) * 3 + 1   # thinned to 4096 samples
    small = torch.rand(17, generator=g)
    constant = torch.zeros(5)
    broken = torch.tensor([1.0, float("nan")])
    hists = histograms([wide, small, constant, broken])
    for tensor, hist in zip((wide, small), hists):
        sample = thin(tensor).numpy().astype(np.float64)
        counts, edges = np.histogram(sample, bins=HISTOGRAM_BINS)
        assert hist["num"] == sample.size and hist["bucket_counts"][0] == 0
        assert np.abs(np.array(hist["bucket_counts"][1:]) - counts).sum() <= 2  # float32 vs float64 at the edges
        np.testing.assert_allclose(hist["bucket_limits"], edges, rtol=1e-5, atol=1e-6)
        assert hist["min"] == pytest.approx(sample.min()) and hist["max"] == pytest.approx(sample.max())
        assert hist["sum"] == pytest.approx(sample.sum(), rel=1e-4)
        assert hist["sum_squares"] == pytest.approx((sample ** 2).sum(), rel=1e-4)
    const = hists[2]
    assert const["min"] == const["max"] == 0 and const["num"] == 5
    assert const["bucket_limits"][0] == -0.5 and const["bucket_limits"][-1] == pytest.approx(0.5)
    assert sum(const["bucket_counts"]) == 5 and max(const["bucket_counts"]) == 5
    assert hists[3] is None
