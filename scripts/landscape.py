"""Curvature and loss landscape of a saved run, or of every completed run of a sweep.

    python scripts/landscape.py run=outputs/runs/<run> [checkpoint=last|best|<path.pt>] [batches=4] [seed=0]
                                [k=5] [probes=30] [eps=0.01] [grid=21] [span=1.0]
    python scripts/landscape.py sweep=outputs/multirun/<sweep> [the same options]

On `batches` fixed batches of 256 training samples (chosen by `seed`), with the model in eval mode (batch norm
on its running statistics, dropout off): the top-k Hessian eigenvalues and the most negative one (Lanczos),
the trace (Hutchinson, `probes` vectors, with its standard error) and the verdict — minimum when every top
eigenvalue is > 0 and the most negative one > −eps·λmax, saddle otherwise. Writes into the run directory
curvature.json, landscape_1d.png (loss and accuracy from checkpoints/init.pt to the checkpoint, α ∈ [−0.5, 1.5])
and landscape_2d.png (the loss over two filter-normalised random directions, grid×grid points in [−span, span]²).
With sweep=: the same for every completed run, their 1-D curves in <sweep>/landscape_1d.png, their surfaces side
by side in <sweep>/landscape_2d.png, and the sweep report (summary.md, summary.csv) rewritten with a lambda_max
column.
"""
from __future__ import annotations

import sys
from pathlib import Path

USAGE = ("usage: python scripts/landscape.py run=<run dir> | sweep=<sweep dir> [checkpoint=last|best|<path>] "
         "[batches=4] [seed=0] [k=5] [probes=30] [eps=0.01] [grid=21] [span=1.0]")
# option → (type, default, check, what the check asks)
OPTIONS = {
    "checkpoint": (str, "last", lambda v: True, ""),
    "batches": (int, 4, lambda v: v >= 1, "at least 1"),
    "seed": (int, 0, lambda v: True, ""),
    "k": (int, 5, lambda v: v >= 1, "at least 1"),
    "probes": (int, 30, lambda v: v >= 2, "at least 2 (the standard error needs two)"),
    "eps": (float, 0.01, lambda v: 0 <= v < 1, "in [0, 1)"),
    "grid": (int, 21, lambda v: v >= 3 and v % 2 == 1, "odd and at least 3 (the final weights are its centre)"),
    "span": (float, 1.0, lambda v: v > 0, "> 0"),
}


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    args, problems = {k: default for k, (_, default, _, _) in OPTIONS.items()}, []
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in (*OPTIONS, "run", "sweep"):
            problems.append(f"unknown argument {item!r}; the keys are run, sweep, {', '.join(OPTIONS)}")
            continue
        if key in ("run", "sweep"):
            args[key] = Path(value)
            continue
        kind, _, ok, need = OPTIONS[key]
        try:
            parsed = kind(value)
        except ValueError:
            problems.append(f"{key}={value!r} must be {'a whole number' if kind is int else 'a number'}")
            continue
        if not ok(parsed):
            problems.append(f"{key}={value} must be {need}")
        args[key] = parsed
    if ("run" in args) == ("sweep" in args):
        problems.append("give exactly one of run=<run dir> and sweep=<sweep dir>")
    return args, problems


def print_run(r: dict) -> None:
    print(f"{r['checkpoint']} (epoch {r['epoch']}, step {r['step']}): {r['parameters']:,} parameters; "
          f"{r['samples']} training samples ({r['batches']} fixed batches of {r['batch_size']}, seed {r['seed']})")
    print(f"  {r['mode']}; loss: {r['objective']}")
    print(f"  loss {r['loss']:.4f}, gradient norm {r['grad_norm']:.4g}; test/acc {r['test']['test/acc']:.4f}, "
          f"test/loss {r['test']['test/loss']:.4f} (this checkpoint, {r['test']['samples']} test samples)")
    print(f"  {'eigenvalue':<12}{'value':>12}{'residual bound':>16}")
    for i, (value, res) in enumerate(zip(r["eigenvalues"], r["residuals"]), 1):
        print(f"  {'λ' + str(i):<12}{value:>12.5g}{res:>16.2g}")
    print(f"  {'λmin':<12}{r['lambda_min']:>12.5g}{r['lambda_min_residual']:>16.2g}")
    print(f"  {'trace':<12}{r['trace']:>12.5g}   ± {r['trace_se']:.3g} (standard error, {r['probes']} probes)")
    state = "converged" if r["converged"] else f"NOT converged to {r['tol']:g}·|λ|max: more steps needed"
    print(f"  Lanczos: {r['lanczos_steps']} steps, {state}")
    s = r.get("stability")
    if s:
        print(f"  edge of stability: 2(1+β)/lr = {s['threshold']:.4g} (lr {s['lr']:.4g}, momentum {s['momentum']:g}); "
              f"λmax is {r['lambda_max'] / s['threshold']:.2f}× of it")
    line = r["interpolation"]
    if "train_loss" in line:
        at = {a: i for i, a in enumerate(line["alpha"])}
        print(f"  1-D (init: {line['init']}): train loss {line['train_loss'][at[0.0]]:.4g} at init → "
              f"{line['train_loss'][at[1.0]]:.4g} at the checkpoint; largest rise on the way "
              f"{line['largest_rise']:.3g}")
    else:
        print(f"  1-D: {line['init']}")
    surface = r["surface"]
    flat = [v for row in surface["train_loss"] for v in row]
    print(f"  2-D: {surface['grid']}×{surface['grid']} points in [−{surface['span']:g}, {surface['span']:g}]², "
          f"train loss {min(flat):.4g} … {max(flat):.4g}")
    t = r["seconds"]
    print(f"  time: Lanczos {t['lanczos']} s, trace {t['trace']} s, 1-D {t['interpolation']} s, 2-D {t['surface']} s; "
          f"total {t['total']} s")
    print(f"verdict: {r['verdict']}")


def print_sweep(results: list[tuple[str, dict]]) -> None:
    head = ["run", "λmax", "λmin", "trace ± se", "test/acc", "verdict"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, r in results:
        print(f"| {label} | {r['lambda_max']:.4g} | {r['lambda_min']:.3g} | {r['trace']:.4g} ± {r['trace_se']:.2g} | "
              f"{r['test']['test/acc']:.4f} | {r['verdict'].split(' (')[0]} |")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    args, problems = parse(argv)
    if problems:
        print("landscape: " + "\n  ".join(problems) + f"\n{USAGE}", file=sys.stderr)
        return 2
    from dltrain.analysis.runs import analyse_run, analyse_sweep
    from dltrain.errors import DataError

    options = {k: args[k] for k in OPTIONS}
    try:
        if "run" in args:
            result = analyse_run(args["run"], **options)
            print_run(result)
            print(f"written: {args['run']}/curvature.json, landscape_1d.png, landscape_2d.png")
        else:
            results = analyse_sweep(args["sweep"], **options)
            for label, result in results:
                print(f"\n== {label}")
                print_run(result)
            print()
            print_sweep(results)
            print(f"written: curvature.json and landscape_*.png in each run; {args['sweep']}/landscape_1d.png, "
                  f"landscape_2d.png, and summary.md, summary.csv with lambda_max")
    except (FileNotFoundError, ValueError, DataError) as e:  # DataError: a checkpoint that is not one
        print(f"landscape: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
