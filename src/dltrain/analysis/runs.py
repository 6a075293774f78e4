"""The curvature and landscape of a saved run (`scripts/landscape.py run=<run dir>`) and of every run of a sweep.

Loads the run as `scripts/evaluate.py` does (dltrain.analysis.evaluate: its config, a checkpoint read weights-only),
measures on a fixed set of training samples, and writes `curvature.json`, `landscape_1d.png` and
`landscape_2d.png` into the run directory.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dltrain.analysis import hessian, landscape

log = logging.getLogger("dltrain")

BATCH_SIZE = 256            # samples per fixed batch, whatever the run trained with: runs are compared on the same set
ALPHAS = [i / 20 for i in range(-10, 31)]   # α from −0.5 to 1.5: init at 0, final weights at 1
MODE = ("eval mode: batch norm uses its running statistics; dropout, DropConnect, drop-path and input noise are off; "
        "no augmentation")
FINISHED = ("completed", "stopped_early")


def fixed_batches(loader, batches: int, seed: int = 0, batch_size: int = BATCH_SIZE):
    """`batches` batches of `batch_size` samples of a loader's data set, the same for every call with the same
    seed (a permutation from its own generator, so the run's random streams are untouched), normalised as the
    loader does, without augmentation."""
    count = min(len(loader.x), batches * batch_size)
    order = torch.randperm(len(loader.x), generator=torch.Generator().manual_seed(seed))[:count]
    order = order.to(loader.x.device)
    x = loader.normalize(loader.x.index_select(0, order).to(loader.device).float().div_(255))
    y = loader.y.index_select(0, order).to(loader.device)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, count, batch_size)]


def curvature(model, loss_fn, batches, k: int = 5, probes: int = 30, seed: int = 0, eps: float = 0.01,
              max_steps: int = 100, tol: float = 1e-3) -> dict:
    """The top-k eigenvalues, the most negative one, the trace (± its standard error) of the Hessian of the mean
    loss over `batches`, the gradient norm, the loss, and the verdict. Uses the model in the mode it is in."""
    start = time.perf_counter()
    op = hessian.model_hessian(model, loss_fn, batches)
    first = op.gradient
    generator = torch.Generator().manual_seed(seed)
    spectrum = hessian.lanczos(op, op.size, k=k, max_steps=max_steps, tol=tol, generator=generator,
                               dtype=first.dtype, device=first.device)
    lanczos_s = time.perf_counter() - start
    trace = hessian.hutchinson(op, op.size, probes, generator, dtype=first.dtype, device=first.device)
    return {
        "loss": op.loss, "grad_norm": float(first.norm()), "parameters": op.size,
        "eigenvalues": spectrum.top, "residuals": spectrum.top_residuals,
        "lambda_max": spectrum.top[0], "lambda_min": spectrum.bottom, "lambda_min_residual": spectrum.bottom_residual,
        "lanczos_steps": spectrum.steps, "converged": spectrum.converged, "tol": tol,
        "trace": trace.mean, "trace_se": trace.se, "probes": trace.probes,
        "verdict": hessian.verdict(spectrum.top, spectrum.bottom, eps), "eps": eps,
        "seconds": {"lanczos": round(lanczos_s, 2), "trace": round(time.perf_counter() - start - lanczos_s, 2)},
    }


def stability_threshold(cfg, checkpoint: dict) -> dict | None:
    """For (heavy-ball) SGD: λmax above 2(1+β)/lr makes gradient descent on the local quadratic diverge (Cohen et
    al. 2021: full-batch GD trains at this "edge of stability"). lr is the checkpoint's own (after any schedule)."""
    node = cfg.optimizer
    if str(node._target_) != "torch.optim.SGD" or node.get("nesterov"):
        return None
    groups = (checkpoint.get("optimizer") or {}).get("param_groups") or []
    lr = float(groups[0]["lr"]) if groups else float(node.lr)
    beta = float(node.get("momentum") or 0.0)
    return {"lr": lr, "momentum": beta, "threshold": 2 * (1 + beta) / lr}


def initial_model(run_dir: Path, cfg, device):
    """(model at the run's initial weights, where they came from), or (None, why not)."""
    from dltrain.analysis.evaluate import load_model
    from dltrain.models import build_model
    from dltrain.runinfo import seed_everything

    path = run_dir / "checkpoints" / "init.pt"
    if path.is_file():
        return load_model(cfg, path, device)[0], "checkpoints/init.pt"
    started_from = OmegaConf.load(run_dir / ".hydra" / "config.yaml").model.get("init_from")
    if started_from:
        return None, (f"no checkpoints/init.pt, and the run started from model.init_from={started_from}: its "
                      f"initial weights cannot be rebuilt, so there is no interpolation")
    # The Trainer seeds everything with cfg.seed and then builds the model (nothing in between draws from the
    # global generators): the same two calls give the same weights (tests/test_curvature.py checks it).
    with torch.random.fork_rng(devices=[]):
        seed_everything(int(cfg.seed))
        model = build_model(cfg).to(device)
    return model, f"rebuilt from seed {cfg.seed} (the run has no checkpoints/init.pt)"


def analyse_run(run_dir: str | Path, checkpoint: str = "last", batches: int = 4, seed: int = 0, k: int = 5,
                grid: int = 21, span: float = 1.0, probes: int = 30, eps: float = 0.01, device: str | None = None,
                write: bool = True, title: str | None = None) -> dict:
    """Everything scripts/landscape.py reports for one run; written to curvature.json (and the two PNGs)."""
    from hydra.utils import instantiate

    from dltrain.analysis import plots
    from dltrain.data import build_datamodule
    from dltrain.analysis.evaluate import evaluate_run, find_checkpoint, load_model, run_config

    run_dir = Path(run_dir)
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} has no .hydra/config.yaml: not a dltrain run directory")
    try:
        path = find_checkpoint(run_dir, checkpoint)
    except FileNotFoundError:
        held = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        raise FileNotFoundError(
            f"{run_dir}: no checkpoint {checkpoint!r} to analyse (checkpoints/ holds {', '.join(held) or 'nothing'}; "
            f"checkpoint=best|last|<path>; fast_dev_run runs save none, and last.pt is written when an epoch "
            f"ends)") from None
    if grid < 3 or grid % 2 == 0:
        raise ValueError(f"grid={grid} must be odd and at least 3, so that the final weights are the grid's centre")
    started = time.perf_counter()
    cfg = run_config(run_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = build_datamodule(cfg, device)
    model, state = load_model(cfg, path, device)
    model.eval()
    loss_fn = instantiate(cfg.loss)
    train = fixed_batches(data.train, batches, seed)
    val = fixed_batches(data.val, batches, seed) if len(data.val.x) else []
    penalties = (f"; without the coupled penalties l1={cfg.regularizer.l1}, l2={cfg.regularizer.l2}"
                 if cfg.regularizer.l1 or cfg.regularizer.l2 else "")
    result = {"run": str(run_dir), "checkpoint": str(path), "epoch": state.get("epoch"), "step": state.get("step"),
              "samples": sum(len(y) for _, y in train), "batches": len(train), "batch_size": BATCH_SIZE,
              "seed": seed, "mode": MODE, "objective": f"{cfg.loss._target_} (the run's criterion{penalties})"}
    result.update(curvature(model, loss_fn, train, k=k, probes=probes, seed=seed, eps=eps))
    result["stability"] = stability_threshold(cfg, state)
    tested = evaluate_run(run_dir, str(path), "test", device=str(device), write=False)
    result["test"] = {key: tested[key] for key in ("test/loss", "test/acc", "samples")}
    t = time.perf_counter()
    result["interpolation"] = interpolation(model, initial_model(run_dir, cfg, device), train, val, loss_fn)
    result["seconds"]["interpolation"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    result["surface"] = surface(model, train, loss_fn, grid, span, seed)
    result["seconds"]["surface"] = round(time.perf_counter() - t, 2)
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    if write:
        (run_dir / "curvature.json").write_text(json.dumps(result, indent=2))
        title = f"{title or run_dir.name} ({path.name})"
        plots.interpolation(run_dir / "landscape_1d.png", result["interpolation"], title)
        plots.surface(run_dir / "landscape_2d.png", result["surface"], title)
    return result


def interpolation(model, initial: tuple, train, val, loss_fn) -> dict:
    """Loss and accuracy on the train and val batches along (1−α)·initial + α·model, batch norm's running
    statistics included; `initial` is initial_model's (model or None, where it came from)."""
    start, source = initial
    line = {"init": source, "alpha": ALPHAS}
    if start is None:
        return line
    start.eval()
    coefficients = landscape.line_coefficients(ALPHAS)
    vectors = [landscape.float_state(start), landscape.float_state(model)]
    for name, split in (("train", train), ("val", val)):
        if split:
            loss, acc = landscape.evaluate_points(model, vectors, coefficients, split, loss_fn)
            line[f"{name}_loss"], line[f"{name}_acc"] = loss.tolist(), acc.tolist()
    line["largest_rise"] = largest_rise([v for a, v in zip(ALPHAS, line["train_loss"]) if 0 <= a <= 1])
    return line


def surface(model, batches, loss_fn, grid: int, span: float, seed: int) -> dict:
    """The training loss on a grid×grid plane around the model's trained parameters, along two filter-normalised
    random directions drawn with `seed`."""
    weights = landscape.trained_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    d1 = landscape.filter_normalized_direction(weights, generator)
    d2 = landscape.filter_normalized_direction(weights, generator)
    coords = landscape.grid_coords(grid, span)
    loss, acc = landscape.evaluate_points(model, [weights, d1, d2], landscape.plane_coefficients(coords), batches,
                                          loss_fn)
    return {"grid": grid, "span": span, "coords": coords,
            "directions": "filter-normalised (Li et al. 2018), zero on biases and norm parameters",
            "train_loss": loss.view(grid, grid).tolist(), "train_acc": acc.view(grid, grid).tolist()}


def largest_rise(values: list[float]) -> float:
    """How far the curve climbs above its lowest value so far (0 for a monotone decrease): Goodfellow et al.
    2015 found the training loss along init → final falling without such a bump for most networks."""
    low, rise = float("inf"), 0.0
    for v in values:
        low = min(low, v)
        rise = max(rise, v - low)
    return rise




def analyse_sweep(sweep_dir: str | Path, **options) -> list[tuple[str, dict]]:
    """analyse_run on every completed run of a sweep; all their interpolation curves in one plot and their
    surfaces side by side (`landscape_1d.png`, `landscape_2d.png` in the sweep directory) and the sweep report
    rewritten with its lambda_max column.
    Returns (label, result) per run."""
    from dltrain.analysis import report
    from dltrain.analysis import plots

    sweep_dir = Path(sweep_dir)
    jobs = report.load_jobs(sweep_dir)
    done = [j for j in jobs if j.status in FINISHED]
    if not done:
        raise FileNotFoundError(f"{sweep_dir} holds no completed run (of {len(jobs)} job directories)")
    keys = report.swept_keys(jobs)
    results = []
    for job in done:
        log.info("landscape: %s", job.dir)
        name = report.label(job, keys)
        results.append((name, analyse_run(job.dir, title=name, **options)))
    plots.sweep_interpolation(sweep_dir / "landscape_1d.png", results, sweep_dir.name)
    plots.sweep_surfaces(sweep_dir / "landscape_2d.png", results, sweep_dir.name)
    report.write_report(sweep_dir)
    return results
