"""Time to accuracy of a sweep's runs (the speedrun's figure): test accuracy and training seconds per run.

    python scripts/time_to_accuracy.py outputs/multirun/<sweep>

train_s sums the runs' `time/epoch_s` (training only: validation, start-up and data loading are not in
it). With trainer.compile=true the first epoch also holds the compilation; `warm_s` replaces that epoch by
the median of the others, which is what a run costs once the compiled kernels are cached.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # `python scripts/time_to_accuracy.py` from a checkout


def epoch_times(run_dir: Path) -> list[float]:
    from dltrain.analysis.report import read_curves  # the sweep report's reader: a resumed run's epochs count once

    return [value for _, value in read_curves(run_dir, tags=("time/epoch_s",)).get("time/epoch_s", [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    from dltrain.analysis.report import load_jobs

    jobs = load_jobs(args.sweep_dir)
    common = set.intersection(*(set(j.overrides) for j in jobs)) if jobs else set()
    rows = []
    for job in jobs:
        times = epoch_times(job.dir)
        if job.test_acc is None or not times:
            print(f"{job.dir.name}: no test accuracy or epoch times (status {job.status})")
            continue
        warm = sum(times) - times[0] + (statistics.median(times[1:]) if len(times) > 1 else times[0])
        name = " ".join(o for o in job.overrides if o not in common) or job.dir.name  # what differs between runs
        rows.append((name, job.test_acc, sum(times), warm, job.wall_s))
    if not rows:
        print(f"no finished runs under {args.sweep_dir}", file=sys.stderr)
        return 1
    print(f"{'run':<40}{'test/acc':>10}{'train_s':>10}{'warm_s':>10}{'wall_s':>10}")
    for name, acc, train, warm, wall in rows:
        print(f"{name[:39]:<40}{acc:>10.4f}{train:>10.2f}{warm:>10.2f}{wall:>10.1f}")
    if len(rows) > 1:
        cols = list(zip(*rows))[1:]
        mean = [statistics.mean(c) for c in cols]
        sd = [statistics.stdev(c) for c in cols]
        print(f"{'mean ± sd':<40}" + "".join(f"{m:>10.4f}" if i == 0 else f"{m:>10.2f}" for i, m in enumerate(mean)))
        print(f"{'':<40}" + "".join(f"{'±' + format(s, '.4f' if i == 0 else '.2f'):>10}" for i, s in enumerate(sd)))
        print(f"min test/acc {min(cols[0]):.4f}, max train_s {max(cols[1]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
