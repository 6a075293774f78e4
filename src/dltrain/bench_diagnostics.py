"""How much the per-layer diagnostics cost: epoch time with `trainer.diagnostics_every_n_steps=100` (the
default) over the same run with diagnostics off. Runs alternate (off, on, off, on, …) in one process after
a warm-up, so drift of the machine hits both sides alike; each side's fastest epoch is used (the least
disturbed by other work on the machine: on a shared 2-core box medians swing by ±15 %).

    python -m dltrain.bench_diagnostics [--quick]        # prints the ratio; scripts/bench.py calls the function
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

DEFAULT = ["trainer.progress_bar=false", "trainer.max_epochs=2"]


def _epoch_time(overrides: list[str], out: Path) -> float:
    from dltrain.config import compose_config
    from dltrain.trainer import Trainer

    cfg = compose_config(overrides, output_dir=out)
    result = Trainer(cfg, overrides=overrides).fit()
    if result["status"] != "completed":
        raise RuntimeError(f"benchmark run {overrides} ended {result['status']}")
    # time/epoch_s of the last epoch: the training pass only, after the first epoch's warm-up
    return float(result["final"]["time/epoch_s"])


def diagnostics_overhead(quick: bool = False, overrides: list[str] | None = None, repeats: int | None = None) -> float:
    """Fastest epoch with diagnostics every 100 steps / fastest without (1.0 = free). Default setting:
    the default run (MLP on Fashion-MNIST, batch 128: ~430 steps, so 5 diagnostic steps an epoch)."""
    base = [*DEFAULT, *(overrides or [])]
    if quick:
        base.append("trainer.max_epochs=1")
    repeats = repeats or (2 if quick else 4)
    with tempfile.TemporaryDirectory(prefix="dltrain-bench-diag-") as tmp:
        tmp = Path(tmp)
        _epoch_time([*base, "trainer.diagnostics_every_n_steps=0"], tmp / "warmup")  # data cache, allocator
        off, on = [], []
        for i in range(repeats):
            off.append(_epoch_time([*base, "trainer.diagnostics_every_n_steps=0"], tmp / f"off{i}"))
            on.append(_epoch_time([*base, "trainer.diagnostics_every_n_steps=100"], tmp / f"on{i}"))
    return min(on) / min(off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.depth=10")
    args = parser.parse_args()
    ratio = diagnostics_overhead(args.quick, args.overrides)
    print(f"diagnostics every 100 steps: epoch time x{ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
