"""Test a saved run: loss, accuracy and confusion matrix of its checkpoint on the test set.

    python scripts/evaluate.py run=outputs/runs/<run> [checkpoint=best|last|<path.pt>] [split=test|val]
    python scripts/evaluate.py run=outputs/runs/<run> ensemble=snapshots   # mean logits of snapshot_<i>.pt
    python scripts/evaluate.py run=outputs/runs/<run> mc_dropout=20        # mean softmax of 20 dropout passes
    python scripts/evaluate.py ensemble=outputs/multirun/<sweep>           # mean softmax of the sweep's runs
    python scripts/evaluate.py run=<dir a> run=<dir b> ...                 # the same for the runs named

Rebuilds model and data from the run's .hydra/config.yaml; writes evaluation_<split>.json,
confusion_<split>.txt and confusion_<split>.png into the run directory. An ensemble of runs prints each member's
accuracy beside the ensemble's (and writes ensemble_<split>.json into the sweep directory); its members must share
the data set and classes.
"""
from __future__ import annotations

import sys
from pathlib import Path

USAGE = ("usage: python scripts/evaluate.py run=<run dir> [run=<run dir>...] [checkpoint=best|last|<path>] "
         "[split=test|val] [ensemble=snapshots|<sweep dir>] [mc_dropout=<passes>]")
KEYS = ("run", "checkpoint", "split", "ensemble", "mc_dropout")


def fail(message: str) -> int:
    print(f"evaluate: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    args, given_runs = {"checkpoint": "best", "split": "test"}, []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            return fail(f"unknown argument {item!r}\n{USAGE}")
        if key == "run":
            given_runs.append(value)
        else:
            args[key] = value
    runs = [Path(value) for value in given_runs]
    ensemble = args.get("ensemble")
    sweep = Path(ensemble) if ensemble not in (None, "snapshots") else None
    if sweep is not None and not sweep.is_dir():
        return fail(f"ensemble={ensemble!r} is neither 'snapshots' nor a sweep directory")
    if not runs and sweep is None:
        print(USAGE, file=sys.stderr)
        return 2
    for given, run in zip(given_runs, runs):
        if not given or not (run / ".hydra" / "config.yaml").is_file():
            return fail(f"run={given}: no .hydra/config.yaml there: not a dltrain run directory")
    if args["split"] not in ("test", "val"):
        return fail(f"split={args['split']!r} is not one of ['test', 'val']")
    passes = args.get("mc_dropout")
    if passes is not None:
        if not passes.isdigit() or int(passes) < 2:
            return fail(f"mc_dropout={passes!r} must be a number of passes, at least 2")
        if len(runs) != 1 or ensemble is not None:
            return fail("mc_dropout=N evaluates one run: give one run=<dir> and no ensemble=")
    if ensemble == "snapshots" and len(runs) != 1:
        return fail("ensemble=snapshots evaluates the snapshots of one run: give one run=<dir>")
    from dltrain.analysis.evaluate import CheckpointMismatch
    from dltrain.errors import ConfigError, DataError

    try:
        if sweep is not None or len(runs) > 1:
            return print_ensemble(runs, sweep, args)
        return print_run(runs[0], args, int(passes) if passes else None)
    # no checkpoint or data; a bad or foreign config; a best.pt that is not the run's best; members differ
    except (FileNotFoundError, ConfigError, DataError, CheckpointMismatch, ValueError) as e:
        return fail(str(e))


def print_run(run: Path, args: dict, passes: int | None) -> int:
    import torch

    from dltrain.analysis.evaluate import confusion_text, evaluate_run

    split = args["split"]
    r = evaluate_run(run, args["checkpoint"], split, ensemble=args.get("ensemble"), mc_dropout=passes)
    what = f" (mean softmax of {passes} dropout passes)" if passes else ""
    print(f"{r['checkpoint']} (epoch {r['epoch']}){what}: {split}/loss={r[f'{split}/loss']:.4f} "
          f"{split}/acc={r[f'{split}/acc']:.4f} on {r['samples']} samples")
    if passes:
        plain = evaluate_run(run, args["checkpoint"], split, write=False)
        print(f"  the same weights in eval mode (one deterministic pass): {split}/loss={plain[f'{split}/loss']:.4f} "
              f"{split}/acc={plain[f'{split}/acc']:.4f}")
    print(confusion_text(torch.tensor(r["confusion"]), r["classes"]))
    suffix = f"{split}_{args['ensemble']}" if args.get("ensemble") else split
    suffix += f"_mc_dropout{passes}" if passes else ""
    print(f"written: {run}/evaluation_{suffix}.json, confusion_{suffix}.txt, confusion_{suffix}.png")
    return 0


def print_ensemble(runs: list[Path], sweep: Path | None, args: dict) -> int:
    from dltrain.analysis.run_ensemble import evaluate_ensemble, member_dirs

    split = args["split"]
    members = runs + (member_dirs(sweep) if sweep is not None else [])
    r = evaluate_ensemble(members, args["checkpoint"], split, write_to=sweep)
    width = max(len(str(m["run"])) for m in r["members"])
    print(f"{len(members)} members, {args['checkpoint']}.pt each, {r['samples']} {split} samples:")
    for m in r["members"]:
        print(f"  {str(m['run']).ljust(width)}  {split}/acc={m[f'{split}/acc']:.4f}  nll={m[f'{split}/nll']:.4f}")
    e = r["ensemble"]
    print(f"  {'ensemble (mean softmax)'.ljust(width)}  {split}/acc={e[f'{split}/acc']:.4f}  nll={e[f'{split}/nll']:.4f}")
    if sweep is not None:
        print(f"written: {sweep}/ensemble_{split}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
