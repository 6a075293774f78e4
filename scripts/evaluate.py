"""Test a saved run: loss, accuracy and confusion matrix of its checkpoint on the test set.

    python scripts/evaluate.py run=outputs/runs/<run> [checkpoint=best|last|<path.pt>] [split=test|val]
    python scripts/evaluate.py run=outputs/runs/<run> ensemble=snapshots   # mean logits of snapshot_<i>.pt

Rebuilds model and data from the run's .hydra/config.yaml; writes evaluation_<split>.json,
confusion_<split>.txt and confusion_<split>.png into the run directory.
"""
from __future__ import annotations

import sys
from pathlib import Path

USAGE = ("usage: python scripts/evaluate.py run=<run dir> [checkpoint=best|last|<path>] [split=test|val] "
         "[ensemble=snapshots]")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    args = {"checkpoint": "best", "split": "test"}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in ("run", "checkpoint", "split", "ensemble"):
            print(f"evaluate: unknown argument {item!r}\n{USAGE}", file=sys.stderr)
            return 2
        args[key] = value
    if "run" not in args:
        print(USAGE, file=sys.stderr)
        return 2
    run = Path(args["run"])
    if not args["run"] or not (run / ".hydra" / "config.yaml").is_file():
        print(f"evaluate: run={args['run']}: no .hydra/config.yaml there: not a dltrain run directory",
              file=sys.stderr)
        return 2
    if args["split"] not in ("test", "val"):
        print(f"evaluate: split={args['split']!r} is not one of ['test', 'val']", file=sys.stderr)
        return 2
    from dltrain.analysis.evaluate import CheckpointMismatch, confusion_text, evaluate_run
    from dltrain.errors import ConfigError, DataError

    if args.get("ensemble") not in (None, "snapshots"):
        print(f"evaluate: ensemble={args['ensemble']!r} is not one of ['snapshots']", file=sys.stderr)
        return 2
    try:
        r = evaluate_run(run, args["checkpoint"], args["split"], ensemble=args.get("ensemble"))
    except (FileNotFoundError, ConfigError, DataError, CheckpointMismatch) as e:  # no such checkpoint or
        # data; a bad or foreign config; a best.pt that is not the run's best
        print(f"evaluate: {e}", file=sys.stderr)
        return 2
    import torch

    split = args["split"]
    print(f"{r['checkpoint']} (epoch {r['epoch']}): {split}/loss={r[f'{split}/loss']:.4f} "
          f"{split}/acc={r[f'{split}/acc']:.4f} on {r['samples']} samples")
    print(confusion_text(torch.tensor(r["confusion"]), r["classes"]))
    suffix = f"{split}_{args['ensemble']}" if args.get("ensemble") else split
    print(f"written: {run}/evaluation_{suffix}.json, confusion_{suffix}.txt, confusion_{suffix}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
