"""Check an initialisation before training: activation std (and weight-gradient norm) per layer for one
batch through the freshly built model; prints a table and writes a PNG.

    python scripts/check_init.py model.depth=10 activation=tanh init=normal
    python scripts/check_init.py data=synthetic model.depth=10 activation=tanh \\
        --each init=normal --each init=normal_large --each init=xavier --out outputs/check_init/tanh.png

Positional arguments are Hydra overrides, shared by every setting; each `--each "k=v k2=v2"` adds one
setting to the comparison. Default PNG: outputs/check_init/<overrides>.png.
"""
from __future__ import annotations

import argparse
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.depth=10 init=xavier")
    parser.add_argument("--each", action="append", default=[], metavar="OVERRIDES",
                        help="one more setting to compare (space-separated overrides); repeatable")
    parser.add_argument("--out", help="PNG path (default outputs/check_init/<overrides>.png)")
    args = parser.parse_args(argv)

    from dltrain.config import ConfigError
    from dltrain.analysis.init_check import default_path, plot, profile, table

    settings = [[*args.overrides, *shlex.split(each)] for each in args.each] or [list(args.overrides)]
    try:
        results = [profile(s) for s in settings]
    except ConfigError as e:
        print(f"check_init: {e}", file=sys.stderr)
        return 2
    for res in results:
        print(table(res))
        print()
    everything = [*args.overrides, *[o for each in args.each for o in shlex.split(each)]]
    path = plot(results, args.out or default_path(everything), common=args.overrides if args.each else [])
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
