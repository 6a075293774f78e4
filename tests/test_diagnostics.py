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


# --- symmetry and the direction of an explosion -------------------------------------------------------------
def kinds(diag):
    return [w.split(": ", 2)[1] for w in diag.warnings]


def diagnosed_step(model, x=None):
    diag, trainer = Diagnostics(histograms=False), fake_trainer(model)
    diag.on_fit_start(trainer)
    one_step(model, diag, trainer, x=x)
    return diag


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU, nn.Sigmoid])
def test_zero_init_warns_symmetry_not_vanishing(activation):
    """init=zeros: every hidden unit identical (and with tanh/ReLU no hidden gradient at all)."""
    model = tiny_mlp(activation)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    diag = diagnosed_step(model)
    assert any(k.startswith("symmetry not broken") for k in kinds(diag)), diag.warnings
    assert any("block0" in w and "same weights" in w for w in diag.warnings)
    assert not any(k == "vanishing gradients" for k in kinds(diag))


def test_a_constant_init_warns_symmetry_though_the_gradients_are_not_zero():
    model = tiny_mlp(nn.Tanh)
    with torch.no_grad():
        for layer, _ in model.init_targets():
            layer.weight.fill_(0.1)
            layer.bias.fill_(0.01)
    diag = diagnosed_step(model)
    assert model.backbone.block0[0].weight.grad.norm() > 0
    assert any(k.startswith("symmetry not broken") for k in kinds(diag)), diag.warnings


def test_every_hidden_gradient_zero_warns_symmetry_even_with_distinct_units():
    scalars = {"diag/block0/grad_norm": 0.0, "diag/block1/grad_norm": 0.0, "diag/head/grad_norm": 0.3}
    spreads = {"block0": 0.9, "block1": 0.8, "head": 1.0}
    found = health_warnings(scalars, ["block0", "block1", "head"], spreads=spreads)
    assert [k for k, _, _ in found] == ["symmetry"] and "grad_norm is 0" in found[0][2]


def test_a_random_init_gives_no_symmetry_warning():
    diag = diagnosed_step(tiny_mlp(nn.Tanh))
    assert not any(k.startswith("symmetry") for k in kinds(diag)), diag.warnings


def test_every_layer_exploding_is_called_exploding_not_vanishing():
    """Large inputs through a linear net with a small classifier: every weight gradient is above 1e3, the first
    layer's 1e-4x the classifier's. That ratio is no vanishing gradient: the warning must say exploding only."""
    model = tiny_mlp(nn.Identity)
    with torch.no_grad():
        model.backbone.block0[0].weight.mul_(100)
        model.backbone.block1[0].weight.mul_(100)
        model.head.weight.mul_(1e-2)
    torch.manual_seed(1)
    diag = diagnosed_step(model, x=torch.randn(32, 6) * 1e5)
    grads = [float(layer.weight.grad.norm()) for layer, _ in model.init_targets()]
    assert min(grads) > 1e3 and grads[0] / grads[-1] < 1e-3     # the situation the test is about
    assert "exploding gradients" in kinds(diag)
    assert all(n in next(w for w in diag.warnings if "exploding gradients" in w) for n in ("block0", "block1", "head"))
    assert "vanishing gradients" not in kinds(diag), diag.warnings


def test_a_small_first_layer_gradient_is_still_vanishing():
    scalars = {"diag/block0/grad_norm": 1e-6, "diag/block1/grad_norm": 1e-2, "diag/head/grad_norm": 1.0}
    assert [k for k, _, _ in health_warnings(scalars, ["block0", "block1", "head"])] == ["vanishing"]


# --- shape errors ---------------------------------------------------------------------------------------------
def test_a_shape_mismatch_at_the_first_forward_names_the_layer_the_shape_and_the_keys(tmp_path, monkeypatch):
    """A model the config check did not see (here: built for 20×20 inputs) meets 28×28 data: the run fails with
    the layer's name, the shape it got and data.in_shape / model.*, not torch's bare message; the traceback
    (torch's error too) is in train.log."""
    import dltrain.build
    from dltrain import Trainer, compose_config
    from dltrain.models import build_model
    from dltrain.shape_errors import ShapeError

    cfg = compose_config(["data=synthetic", "model.width=16", "trainer.max_epochs=1", "logger=none",
                          "trainer.progress_bar=false"], output_dir=tmp_path)
    wrong = cfg.copy()
    wrong.data.in_shape = [1, 20, 20]
    monkeypatch.setattr(dltrain.build, "build_model", lambda c: build_model(wrong))
    with pytest.raises(ShapeError) as info:
        Trainer(cfg).fit()
    text = str(info.value)
    assert "layer backbone.block0.0 (Linear) got a tensor of shape [2, 784]" in text
    assert "mat1 and mat2" in text and "data.in_shape=[1, 28, 28]" in text and "model.width=16" in text
    assert "Data samples: [1, 28, 28]" in text
    log = (tmp_path / "train.log").read_text()
    assert "Traceback" in log and "layer backbone.block0.0" in log and "RuntimeError: mat1 and mat2" in log


def test_failing_layer_is_none_when_the_forward_pass_runs():
    from dltrain.shape_errors import failing_layer

    model = tiny_mlp()
    assert failing_layer(model, torch.randn(2, 6)) is None
    name, module, shape, reason = failing_layer(model, torch.randn(2, 5))
    assert (name, shape) == ("backbone.block0.0", [2, 5]) and isinstance(module, nn.Linear)


def test_zero_gradients_from_dead_units_are_the_dead_warning_not_symmetry():
    """Every ReLU of block1 dead (normal init's fate at depth): no hidden gradient, but distinct units."""
    model = tiny_mlp()
    with torch.no_grad():
        model.backbone.block1[0].bias.fill_(-100.0)
        model.backbone.block0[0].bias.fill_(-100.0)
    diag = diagnosed_step(model)
    assert float(model.backbone.block0[0].weight.grad.norm()) == 0
    assert any(k.startswith("dead units") for k in kinds(diag))
    assert not any(k.startswith("symmetry") for k in kinds(diag)), diag.warnings


def test_zero_gradient_norms_from_activations_that_vanished_are_vanishing_not_symmetry():
    """The must-show's init=normal at depth 30 (ReLU), step 1: act_std falls from 0.17 to 3.7e-29 and every
    hidden grad_norm reads 0 (the squares of gradients ~1e-30 underflow in the norm), with distinct units.
    That is the vanishing-activations warning, not symmetry."""
    names = [f"block{i}" for i in range(30)]
    scalars = {f"diag/{n}/grad_norm": 0.0 for n in names}
    scalars.update({"diag/head/grad_norm": 2e-3, "diag/block0/act_std": 0.17, "diag/block29/act_std": 3.7e-29})
    scalars.update({f"diag/{n}/dead_frac": 0.4 for n in names})
    found = health_warnings(scalars, [*names, "head"], names, spreads={n: 1.0 for n in names})
    kinds_found = {k for k, _, _ in found}
    assert "vanishing_acts" in kinds_found and "symmetry" not in kinds_found, found
