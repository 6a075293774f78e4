"""Curvature and loss landscapes (dltrain/analysis, scripts/landscape.py, callbacks/curvature.py): the maths
against exact answers (quadratics, the full Hessian of a tiny network, finite differences), the directions, the
grid, and the tool on real runs (single, sweep, DDP)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dltrain.analysis import hessian, landscape
from dltrain.analysis.runs import analyse_run, analyse_sweep, fixed_batches, initial_model
from tests.conftest import FAST, ROOT, read_metrics, read_scalars

_spec = importlib.util.spec_from_file_location("landscape_cli", ROOT / "scripts" / "landscape.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

QUICK = dict(batches=1, k=3, probes=4, grid=5, device="cpu")   # what the run-level tests need: seconds, not minutes


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def quadratic(matrix: torch.Tensor) -> hessian.Hessian:
    """H of f(x) = ½ xᵀAx is A, at any x."""
    x = torch.randn(len(matrix), dtype=torch.float64, generator=gen(1)).requires_grad_()
    return hessian.Hessian([0.5 * x @ matrix @ x], [x])


def symmetric_with(eigenvalues: list[float]) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=torch.float64, generator=gen(2)))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


# -- the maths ---------------------------------------------------------------------------------------------
def test_quadratic_with_known_spectrum_gives_its_eigenvalues_trace_and_minimum():
    eigenvalues = [9.0, 7.5, 4.0, 3.0, 2.5] + [0.5 + 0.05 * i for i in range(35)]
    a = symmetric_with(eigenvalues)
    op = quadratic(a)
    s = hessian.lanczos(op, op.size, k=5, tol=1e-8, dtype=torch.float64, generator=gen())
    assert s.top == pytest.approx([9.0, 7.5, 4.0, 3.0, 2.5], rel=1e-8)
    assert s.bottom == pytest.approx(0.5, rel=1e-8) and s.converged
    trace = hessian.hutchinson(op, op.size, probes=400, dtype=torch.float64, generator=gen())
    exact = sum(eigenvalues)
    off = float((a ** 2).sum() - (a.diag() ** 2).sum())       # Var(vᵀAv) = 2·Σ_{i≠j} A_ij² for Rademacher v
    assert trace.se == pytest.approx((2 * off / 400) ** 0.5, rel=0.2)
    assert abs(trace.mean - exact) < 4 * trace.se
    assert hessian.verdict(s.top, s.bottom).startswith("minimum")


def test_saddle_x2_minus_y2_exact_eigenvalues_trace_and_verdict():
    p = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    op = hessian.Hessian([p[0] ** 2 - p[1] ** 2], [p])                 # H = diag(2, −2)
    s = hessian.lanczos(op, op.size, k=2, dtype=torch.float64, generator=gen())
    assert s.top == pytest.approx([2.0, -2.0], abs=1e-12) and s.bottom == pytest.approx(-2.0, abs=1e-12)
    trace = hessian.hutchinson(op, op.size, probes=10, dtype=torch.float64, generator=gen())
    # a diagonal H: every probe gives the trace exactly
    assert trace.mean == pytest.approx(0.0, abs=1e-12) and trace.se == pytest.approx(0.0, abs=1e-12)
    text = hessian.verdict(s.top, s.bottom)
    assert text.startswith("saddle") and "size 2" in text


def test_verdict_uses_eps_times_lambda_max():
    assert hessian.verdict([10.0, 3.0], -0.05, eps=0.01).startswith("minimum")    # −0.05 > −0.1
    assert hessian.verdict([10.0, 3.0], -0.2, eps=0.01).startswith("saddle")
    assert hessian.verdict([-1.0, -2.0], -3.0).startswith("maximum")


def test_lanczos_finds_a_repeated_eigenvalue_as_often_as_it_occurs():
    """A Krylov space holds one copy of a repeated eigenvalue: the run must restart outside it."""
    op = quadratic(torch.diag(torch.tensor([5.0, 5.0, 5.0] + [1.0] * 20, dtype=torch.float64)))
    s = hessian.lanczos(op, op.size, k=4, dtype=torch.float64, generator=gen())
    assert s.top == pytest.approx([5.0, 5.0, 5.0, 1.0], rel=1e-9)


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def tiny_batches():
    g = gen(3)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    return [(x[:24], y[:24]), (x[24:], y[24:])]     # unequal batches: the weighting must give the mean over all 40


def full_hessian(model, batches) -> torch.Tensor:
    """The exact Hessian of the mean loss, by torch.autograd.functional.hessian on a float64 copy."""
    from torch.func import functional_call

    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    x = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches])

    def loss(flat):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[i:i + shape.numel()].view(shape)
            i += shape.numel()
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.autograd.functional.hessian(loss, flat)


def test_top_eigenvalues_of_a_tiny_network_match_its_full_hessian():
    model, batches = tiny_net(), tiny_batches()
    op = hessian.model_hessian(model, nn.CrossEntropyLoss(), batches)       # float32, as the tool runs
    s = hessian.lanczos(op, op.size, k=5, tol=1e-5, generator=gen())
    exact = torch.linalg.eigvalsh(full_hessian(tiny_net(), batches))
    assert op.size == 51
    assert s.top == pytest.approx(exact.flip(0)[:5].tolist(), rel=1e-4)
    assert s.bottom == pytest.approx(float(exact[0]), rel=1e-4)


def test_hessian_vector_product_matches_finite_differences_of_the_gradient():
    model, batches = tiny_net().double(), [(x.double(), y) for x, y in tiny_batches()]
    op = hessian.model_hessian(model, nn.CrossEntropyLoss(), batches)
    v = torch.randn(op.size, dtype=torch.float64, generator=gen(4))
    hv = op(v)                                # before the weights are moved (the graph holds them)
    params = list(model.parameters())

    def gradient_at(shift):
        with torch.no_grad():
            for p, d in zip(params, hessian.unflatten(shift, params)):
                p.add_(d)
        total = sum(len(y) for _, y in batches)
        loss = sum(nn.functional.cross_entropy(model(x), y) * len(y) / total for x, y in batches)
        g = hessian.flatten(torch.autograd.grad(loss, params), params)
        with torch.no_grad():
            for p, d in zip(params, hessian.unflatten(shift, params)):
                p.sub_(d)
        return g

    h = 1e-5
    finite = (gradient_at(h * v) - gradient_at(-h * v)) / (2 * h)
    torch.testing.assert_close(hv, finite, rtol=1e-6, atol=1e-8)
    assert float(hv.norm()) > 0.1


def test_filter_normalised_direction_has_each_filters_norm_and_zero_on_1d_parameters():
    conv, fc = nn.Conv2d(3, 5, 3), nn.Linear(7, 4)
    weights = {"conv.weight": conv.weight.detach() * 3, "conv.bias": conv.bias.detach(),
               "fc.weight": fc.weight.detach(), "norm.weight": torch.ones(4)}
    d = landscape.filter_normalized_direction(weights, gen())
    for name in ("conv.weight", "fc.weight"):
        w = weights[name]
        assert d[name].shape == w.shape
        torch.testing.assert_close(d[name].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5, atol=0)
        assert not torch.allclose(d[name] / d[name].norm(), w / w.norm())       # a random direction, not w itself
    assert torch.equal(d["conv.bias"], torch.zeros(5)) and torch.equal(d["norm.weight"], torch.zeros(4))


def tiny_conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.Conv2d(1, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3, 3))


@pytest.mark.parametrize("make", [tiny_net, tiny_conv_net])   # vmap, and one call per point (convolutions)
def test_batched_points_equal_the_model_evaluated_one_point_at_a_time(make):
    model, batches = make(), tiny_batches()
    start = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    final = landscape.float_state(model)
    alphas = [-0.5, 0.0, 0.3, 1.0, 1.5]
    loss, acc = landscape.evaluate_points(model, [start, final], landscape.line_coefficients(alphas), batches,
                                          nn.CrossEntropyLoss(), chunk=2)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    from torch.func import functional_call

    for i, a in enumerate(alphas):
        point = {n: (1 - a) * start[n] + a * final[n] for n in final}
        logits = functional_call(model, point, (x,))
        assert float(loss[i]) == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
        assert float(acc[i]) == pytest.approx(float((logits.argmax(1) == y).float().mean()))


# -- the tool on runs ---------------------------------------------------------------------------------------
def trained_run(directory, *overrides):
    """A finished run in `directory` with the .hydra files a CLI run has."""
    from dltrain.config import compose_config
    from dltrain.trainer import Trainer

    other_model = any(o.startswith("model=") for o in overrides)      # FAST's model.width is the MLP's
    cfg = compose_config([*(a for a in FAST if not (other_model and a.startswith("model."))), *overrides],
                         output_dir=directory)
    (directory / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, directory / ".hydra" / "config.yaml")
    (directory / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
    trainer = Trainer(cfg)
    trainer.fit()
    return directory, trainer


def fixed_loss(model, loss_fn, batches) -> float:
    total = sum(len(y) for _, y in batches)
    with torch.no_grad():
        return sum(float(loss_fn(model(x), y)) * len(y) for x, y in batches) / total


def test_run_grid_centre_and_line_ends_are_the_losses_of_the_weights_computed_directly(tmp_path):
    """On a CNN with batch norm, which must be evaluated in eval mode (its running statistics) everywhere."""
    run, trainer = trained_run(tmp_path / "run", "model=cnn", "model.channels=[4]", "model.hidden=16", "norm=batch",
                               "trainer.max_epochs=1", "trainer.limit_train_batches=8")
    result = analyse_run(run, **QUICK)
    from dltrain.analysis.evaluate import load_model, run_config

    cfg = run_config(run)
    batches = fixed_batches(trainer.data.train, QUICK["batches"])
    model = load_model(cfg, run / "checkpoints" / "last.pt", torch.device("cpu"))[0].eval()
    direct = fixed_loss(model, trainer.loss_fn, batches)
    model.train()
    assert abs(fixed_loss(model, trainer.loss_fn, batches) - direct) > 1e-4 * direct   # batch statistics differ
    centre = QUICK["grid"] // 2
    assert result["surface"]["train_loss"][centre][centre] == pytest.approx(direct, rel=1e-5)
    assert result["loss"] == pytest.approx(direct, rel=1e-5)
    line = result["interpolation"]
    at = {a: i for i, a in enumerate(line["alpha"])}
    assert line["init"] == "checkpoints/init.pt"
    assert line["train_loss"][at[1.0]] == pytest.approx(direct, rel=1e-5)
    init = load_model(cfg, run / "checkpoints" / "init.pt", torch.device("cpu"))[0].eval()
    assert line["train_loss"][at[0.0]] == pytest.approx(fixed_loss(init, trainer.loss_fn, batches), rel=1e-5)
    saved = json.loads((run / "curvature.json").read_text())
    assert saved["lambda_max"] == result["lambda_max"] == max(saved["eigenvalues"])
    assert "running statistics" in saved["mode"]
    assert saved["test"]["test/acc"] == pytest.approx(read_metrics(run)["test"]["test/acc"])  # 1 epoch: best = last
    for name in ("landscape_1d.png", "landscape_2d.png"):
        assert (run / name).stat().st_size > 1000


def test_init_pt_holds_the_initial_weights_and_the_seeded_rebuild_reproduces_them(tmp_path):
    run, trainer = trained_run(tmp_path / "run", "trainer.max_epochs=1", "seed=3")
    state = torch.load(run / "checkpoints" / "init.pt", weights_only=True)
    assert state["step"] == 0 and state["epoch"] == 0
    final = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not torch.equal(state["model"]["head.weight"], final["head.weight"])
    from dltrain.analysis.evaluate import run_config

    (run / "checkpoints" / "init.pt").unlink()
    rebuilt, source = initial_model(run, run_config(run), torch.device("cpu"))
    assert "rebuilt from seed 3" in source
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    result = analyse_run(run, **QUICK)
    assert result["interpolation"]["init"].startswith("rebuilt from seed 3") and "train_loss" in result["interpolation"]
    # a run that started from another run's weights cannot be rebuilt without its init.pt: no line, and it says so
    tuned, _ = trained_run(tmp_path / "tuned", "trainer.max_epochs=1", f"model.init_from={run}/checkpoints/last.pt")
    (tuned / "checkpoints" / "init.pt").unlink()
    line = analyse_run(tuned, **QUICK)["interpolation"]
    assert "train_loss" not in line and "model.init_from=" in line["init"] and "cannot be rebuilt" in line["init"]
    assert (tuned / "landscape_1d.png").is_file()


def test_the_tool_refuses_a_run_without_checkpoints_and_bad_options(tmp_path, capsys):
    run, _ = trained_run(tmp_path / "run", "trainer.fast_dev_run=true")
    assert cli.main([f"run={run}"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint 'last' to analyse" in err and "checkpoints/ holds nothing" in err
    assert not (run / "curvature.json").exists()
    assert cli.main([f"run={tmp_path}"]) == 2
    assert "not a dltrain run directory" in capsys.readouterr().err
    assert cli.main([f"run={run}", "grid=4", "k=0", "colour=red"]) == 2
    err = capsys.readouterr().err
    assert "grid=4 must be odd" in err and "k=0 must be at least 1" in err and "unknown argument 'colour=red'" in err


def test_the_cli_prints_the_table_and_the_verdict(tmp_path, capsys):
    run, _ = trained_run(tmp_path / "run", "trainer.max_epochs=1")
    assert cli.main([f"run={run}", "batches=1", "k=2", "probes=3", "grid=3", "checkpoint=best"]) == 0
    out = capsys.readouterr().out
    assert "best.pt" in out and "λ1" in out and "λ2" in out and "λmin" in out and "trace" in out
    assert "running statistics" in out and "edge of stability: 2(1+β)/lr = 20" in out   # SGD at lr 0.1
    assert out.strip().splitlines()[-2].startswith("verdict: ")


def test_a_sweep_gets_every_runs_curves_in_one_plot_and_a_lambda_max_column(tmp_path):
    sweep = tmp_path / "sweep"
    for lr in ("0.05", "0.2"):
        trained_run(sweep / f"optimizer.lr={lr}", "trainer.max_epochs=1", f"optimizer.lr={lr}")
    results = analyse_sweep(sweep, **QUICK)
    assert [label for label, _ in results] == ["optimizer.lr=0.05", "optimizer.lr=0.2"]
    assert (sweep / "landscape_1d.png").stat().st_size > 1000
    summary = (sweep / "summary.md").read_text()
    assert "lambda_max" in next(line for line in summary.splitlines() if line.startswith("|"))  # the table's header
    for label, result in results:
        row = next(line for line in summary.splitlines() if line.startswith(f"| {label} |"))
        assert f"{result['lambda_max']:.4f}" in row
    csv = (sweep / "summary.csv").read_text().splitlines()
    assert "lambda_max" in csv[0].split(",")


def test_curvature_callback_logs_what_the_tool_measures_and_leaves_training_unchanged(tmp_path):
    run, trainer = trained_run(tmp_path / "with", "trainer.max_epochs=2", "trainer.curvature_every_n_epochs=1",
                               "regularizer.dropout=0.3")
    _, plain = trained_run(tmp_path / "without", "trainer.max_epochs=2", "regularizer.dropout=0.3")
    for name, tensor in plain.model.state_dict().items():   # dropout draws from the global generator: untouched
        assert torch.equal(tensor, trainer.model.state_dict()[name]), name
    scalars = read_scalars(run)
    steps = read_metrics(run)["steps"]
    assert [s for s, _ in scalars["curv/lambda_max"]] == [steps // 2, steps] == [s for s, _ in scalars["curv/trace"]]
    logged = scalars["curv/lambda_max"][-1][1]
    measured = analyse_run(run, batches=4, k=1, probes=2, grid=3, device="cpu")   # the callback's batches: 4, seed 0
    assert logged == pytest.approx(measured["lambda_max"], rel=1e-3)
    assert all(value > 0 for _, value in scalars["curv/trace"])


def test_curvature_every_n_epochs_is_validated(fast_cfg):
    from dltrain.config import ConfigError

    for bad, words in (("0", "must lie in [1"), ("1.5", "must be a whole number"), ("x", "must be a whole number")):
        with pytest.raises(ConfigError, match=r"trainer\.curvature_every_n_epochs") as e:
            fast_cfg(f"trainer.curvature_every_n_epochs={bad}")
        assert words in str(e.value)
    assert fast_cfg("trainer.curvature_every_n_epochs=null").trainer.curvature_every_n_epochs is None


@pytest.mark.slow
def test_the_tool_reads_a_ddp_runs_checkpoint(tmp_path):
    """DDP saves the unwrapped model's state dict (Trainer.model, not the DDP wrapper), so its checkpoint is an
    ordinary one. A fused-sweep member's checkpoint (issue 19) is written in this same format, as an ordinary
    run's, which the other tests here cover."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29537"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # with the curvature callback on rank 0 between two epochs: its products must not wait for the other rank
    proc = subprocess.run([*torchrun, str(ROOT / "train.py"), *FAST, "trainer.max_epochs=2", "trainer.strategy=ddp",
                           "trainer.accelerator=cpu", "trainer.limit_train_batches=4",
                           "trainer.curvature_every_n_epochs=1", "hydra.run.dir=outputs/ddp"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "outputs" / "ddp"
    assert [s for s, _ in read_scalars(run)["curv/lambda_max"]] == [4, 8]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in state)
    result = analyse_run(run, batches=4, k=1, probes=2, grid=3, device="cpu")   # the callback's batches
    assert result["interpolation"]["init"] == "checkpoints/init.pt" and result["lambda_max"] > 0
    assert result["lambda_max"] == pytest.approx(read_metrics(run)["final"]["curv/lambda_max"], rel=1e-3)
