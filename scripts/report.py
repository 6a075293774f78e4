"""Compare the runs of a sweep: writes summary.md, summary.csv and PNGs into the sweep directory.

    python scripts/report.py outputs/multirun/<sweep> [--no-plots]

Runs that differ only in `seed` are grouped as mean ± std; failed and diverged runs are listed. The same
report is written automatically when a `python train.py -m ...` sweep ends (hydra.callbacks.report).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory, e.g. outputs/multirun/<date>_<id>")
    parser.add_argument("--no-plots", action="store_true", help="only summary.md and summary.csv")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"report: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    from dltrain.analysis.report import write_report

    path = write_report(args.sweep_dir, plots=not args.no_plots)
    if path is None:
        print(f"report: no runs (directories with .hydra/overrides.yaml) under {args.sweep_dir}", file=sys.stderr)
        return 1
    print(path.read_text())
    print(f"written: {path} and summary.csv beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
