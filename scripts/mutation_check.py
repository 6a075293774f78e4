"""Do the tests bite? Plant one deliberate bug at a time in a copy of the tree and run the tests that should catch it.

    .venv/bin/python scripts/mutation_check.py              # every mutation, 2 at a time (~35 min on 2 CPU cores)
    .venv/bin/python scripts/mutation_check.py --only l2     # the mutations whose name contains "l2"
    .venv/bin/python scripts/mutation_check.py --list        # the list, nothing run

Each entry of MUTATIONS is one line-sized change: (file, the exact original text, its replacement, the test files
to run, what the bug means). The tree (`git ls-files`: tracked and untracked-but-not-ignored files) is copied once
to a temporary directory; every mutation gets its own copy of that, with the one change applied, and runs only
its test files with this Python and PYTHONPATH=<copy>/src first, so the copy's dltrain (and its configs/, found
next to the package) is what the tests import, subprocesses (train.py under test) included. Before anything runs,
the script checks that every original text occurs exactly once in its file — code that moved makes the list fail
loudly, never silently test nothing — then that the copy really is what Python imports, then that the named test
files pass on the unmutated copy (a mutation "caught" by tests that fail anyway proves nothing). It prints a table
(mutation, tests run, caught?, seconds) and exits 1 if any mutation survives or a check fails, 2 for a broken list.

Not in .ci/run: it runs the relevant test files 42 times (tests/test_mutation_list.py, in CI, only checks that the
list still matches the code). Run it after changing tests or the code they pin, and before a release; when a
mutation survives, the tests have a real gap: add the test that catches it.

Why a hand-written list and not mutmut or cosmic-ray (both install from PyPI here: mutmut 3.8.1, cosmic-ray 8.7.0):
they mutate Python operators, comparisons, constants and arguments everywhere — src/ has ~5,000 such sites (counted
with ast), most of whose mutants are equivalent or in messages — which at 20-150 s of tests each is days on 2
cores; they cannot mutate configs/ (Adam's betas in a YAML file is the kind of bug users pay for); and the bugs
worth pinning are semantic ones — a penalty line deleted, fan_in read as fan_out, dead units counted per element —
that no operator swap produces. A curated list names the bug and the tests expected to catch it, and runs in
about half an hour.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_JOBS = 2  # the CI machine has 2 cores; each test run is given one thread (OMP_NUM_THREADS=1)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    what: str


def m(name, file, original, replacement, tests, what):
    return Mutation(name, file, original, replacement, tuple(f"tests/{t}" for t in tests.split()), what)


TRAINER, OPTIM, SCHEDULES = "src/dltrain/trainer.py", "src/dltrain/optim/__init__.py", "src/dltrain/optim/schedules.py"
STEP, BUILD, CHECKPOINT = "src/dltrain/step.py", "src/dltrain/build.py", "src/dltrain/checkpoint.py"
NN, DATA = "src/dltrain/nn/", "src/dltrain/data/"
MUTATIONS = [
    # -- the ten of issue 21 -------------------------------------------------------------------------------------
    m("penalty-gradients-line", STEP, "add_penalty_gradients(self.weights, self.l1, self.l2)", "pass",
      "test_option_effects.py test_regularizers.py", "the Trainer never adds the L1/L2 gradients"),
    m("adam-betas", "configs/optimizer/adam.yaml", "betas: [0.9, 0.999]", "betas: [0.8, 0.999]",
      "test_shipped_defaults.py test_optimizers.py", "Adam's β₁ is not the paper's"),
    m("dead-frac-per-element", "src/dltrain/diagnostics.py",
      'stats["dead_frac"] = (per_unit.amax(dim=1) <= 0).float().mean()',
      'stats["dead_frac"] = (out <= 0).float().mean()',
      "test_diagnostics.py", "dead units counted per element, not per unit"),
    m("nan-loss-check", TRAINER, "if not all(math.isfinite(v) for v in values):", "if False:",
      "test_checkpoints.py", "a NaN training loss does not end the run"),
    m("he-fan", NN + "init.py", "resolve_gain(gain, activation, he_paper_gain(activation)) / math.sqrt(fans(layer.weight)[0])",
      "resolve_gain(gain, activation, he_paper_gain(activation)) / math.sqrt(fans(layer.weight)[1])",
      "test_init.py test_option_effects.py", "He's std uses fan_out"),
    m("l2-factor", NN + "penalties.py", "w.grad.add_(w, alpha=l2)", "w.grad.add_(w, alpha=l2 / 2)",
      "test_regularizers.py test_option_effects.py", "L2 adds λ/2·w to the gradient"),
    m("no-decay-group", OPTIM, '"weight_decay": 0.0, "name": "no_decay"', '"weight_decay": decay, "name": "no_decay"',
      "test_optimizers.py test_option_effects.py", "biases and norm parameters are decayed"),
    m("warmup-cosine-step", SCHEDULES, "return [base * (t + 1) / (w + 1) for base in self.base_lrs]",
      "return [base * t / w for base in self.base_lrs]", "test_schedulers.py test_option_effects.py",
      "the warm-up starts at lr 0 and reaches lr₀ a step early"),
    m("rng-restore-on-resume", CHECKPOINT, 'set_rng_state(checkpoint["rng"])', "pass",
      "test_resume.py", "a resumed run does not restore the random generators"),
    m("label-smoothing-k", NN + "losses.py", "label_smoothing / num_classes if label_smoothing else y",
      "label_smoothing / (num_classes - 1) if label_smoothing else y", "test_losses.py test_option_effects.py",
      "label smoothing spreads ε over K − 1 classes"),
    # -- nn/ ------------------------------------------------------------------------------------------------------
    m("dropconnect-scale", NN + "regularizers.py", "self.weight * mask / (1 - self.rate)", "self.weight * mask",
      "test_regularizers.py", "DropConnect does not rescale the kept weights"),
    m("drop-path-scale", NN + "regularizers.py", "return x * keep / (1 - self.rate)",
      "return x * keep", "test_option_effects.py test_regularizers.py",
      "stochastic depth does not rescale the kept branches"),
    m("input-noise-in-eval", NN + "regularizers.py", "if not self.training:\n            return x\n        return x + normal",
      "return x + normal",
      "test_option_effects.py test_regularizers.py", "input noise is added in evaluation too"),
    m("dropout-rate", "src/dltrain/models/blocks.py", "parts.append(Dropout(dropout, channels=spatial))",
      "parts.append(Dropout(dropout / 2, channels=spatial))", "test_option_effects.py test_regularizers.py",
      "the MLP's dropout drops half the configured rate"),
    m("layer-norm-is-instance-norm", NN + "norms.py", "return nn.GroupNorm(1, num_features, eps=eps, affine=affine)",
      "return nn.GroupNorm(num_features, num_features, eps=eps, affine=affine)", "test_norms.py",
      "norm=layer on conv features normalises each channel alone"),
    m("norm-placement", "src/dltrain/models/blocks.py", 'if norm is not None and placement == "pre_activation":',
      'if norm is not None and placement != "pre_activation":', "test_option_effects.py test_norms.py",
      "pre_activation puts the norm after the activation"),
    m("tanh-gain", NN + "init.py", 'nn.Tanh: lambda a: _gain("tanh"),', "nn.Tanh: lambda a: 1.0,",
      "test_init.py test_activations.py", "init.gain=activation ignores tanh's gain 5/3"),
    m("paper-gain-is-activation-gain", NN + "init.py", 'if gain == "paper":\n        return paper',
      'if gain == "paper":\n        return gain_for(activation)', "test_init.py test_option_effects.py",
      "init=xavier activation=relu is scaled by √2 (He's variance), not Glorot's rule"),
    m("weight-noise-kept-for-the-update", NN + "weight_noise.py", "w.copy_(c)", "pass", "test_option_effects.py",
      "the update is applied to the noisy weights"),
    m("noise-keys-not-per-seed", "src/dltrain/models/__init__.py", "seed_modules(model, int(cfg.seed))",
      "seed_modules(model, 0)", "test_fused.py test_noise.py", "every seed draws the same dropout masks"),
    m("noise-counter-not-counting", NN + "noise.py", "        self.calls.add_(1)\n", "",
      "test_noise.py test_option_effects.py", "dropout draws the same mask every step"),
    m("fused-weight-noise-dropped", "src/dltrain/fused/group.py", "with self.noisy_weights():", "with contextlib.nullcontext():",
      "test_fused.py", "a fused member trains without its weight noise"),
    m("unread-keys-accepted", "src/dltrain/node_keys.py", "    p = schema_key_problems(cfg)\n", "    return []\n",
      "test_unknown_keys.py", "+trainer.foo=1 and optimizer.betaz are silently ignored"),
    m("symmetry-unseen", "src/dltrain/diagnostics.py", "    found += symmetric\n", "", "test_diagnostics.py",
      "init=zeros gives no symmetry warning"),
    m("top5-is-top3", NN + "metrics.py", "logits.topk(min(5, logits.shape[1]), dim=1)",
      "logits.topk(min(3, logits.shape[1]), dim=1)", "test_metrics.py", "top5 counts the top 3"),
    # -- diagnostics -----------------------------------------------------------------------------------------------
    m("update-ratio-over-new-weights", "src/dltrain/callbacks/diagnostics.py",
      "(w.detach().float() - before).norm() / before.norm()", "(w.detach().float() - before).norm() / w.norm()",
      "test_diagnostics.py", "update_ratio divides by the new weights' norm"),
    m("vanishing-rule-inverted", "src/dltrain/diagnostics.py", "ratio = g0 / g1", "ratio = g1 / g0",
      "test_diagnostics.py", "vanishing and exploding gradients swapped"),
    # -- optim and schedules ---------------------------------------------------------------------------------------
    m("norm-scales-decayed", OPTIM, "(weights if p.dim() >= 2 and id(p) not in norm_params else others)",
      "(weights if p.dim() >= 2 else others)", "test_optimizers.py", "2-d norm scales land in the decayed group"),
    m("schedule-run-length", "src/dltrain/length.py", "steps = self.steps_per_epoch * self.epochs",
      "steps = self.steps_per_epoch * (self.epochs + 1)", "test_option_effects.py test_schedulers.py",
      "step schedules think the run is an epoch longer"),
    m("inverse-time-offset", SCHEDULES, "base / (1.0 + self.decay * self.last_epoch)",
      "base / (1.0 + self.decay * (self.last_epoch + 1))", "test_schedulers.py", "1/t decay starts decayed"),
    # -- the trainer step ------------------------------------------------------------------------------------------
    m("accumulation-weighting", STEP, "weighted = loss if single else loss * (y.shape[0] / total)",
      "weighted = loss", "test_option_effects.py test_training_options.py",
      "accumulated micro-batches add up k× the gradient"),
    m("grad-clip-by-value", STEP, "torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)",
      "torch.nn.utils.clip_grad_value_(self.model.parameters(), self.grad_clip)", "test_option_effects.py",
      "grad_clip clips each element instead of the global norm"),
    m("fp16-unscaled-backward", STEP, "(scaler.scale(weighted) if scaler else weighted).backward()",
      "weighted.backward()", "test_devices.py", "fp16 backward without the loss scale"),
    m("dp-not-wrapped", BUILD,
      'net = nn.DataParallel(model, device_ids=ids if device.type == "cuda" else None)', "net = model",
      "test_devices.py", "strategy=dp runs without DataParallel"),
    m("ema-never-updated", "src/dltrain/callbacks/ema.py", "trainer.ema.update_parameters(trainer.model)", "pass",
      "test_option_effects.py test_training_options.py", "the EMA weights never move"),
    m("eval-loss-unweighted", TRAINER, "loss_sum += self.loss_fn(logits, y).float() * len(y)",
      "loss_sum += self.loss_fn(logits, y).float()", "test_evaluate_transfer.py",
      "val/test loss summed per batch, divided per sample"),
    m("early-stopping-late", "src/dltrain/callbacks/early_stopping.py", "if self.bad_epochs < self.patience:",
      "if self.bad_epochs <= self.patience:", "test_option_effects.py", "early stopping waits one epoch too many"),
    m("ensemble-last-member", "src/dltrain/analysis/ensemble.py", "return torch.stack([m(x) for m in self.members]).mean(dim=0)",
      "return self.members[-1](x)", "test_evaluate_transfer.py test_training_options.py",
      "the snapshot ensemble is its last member"),
    # -- checkpoint / resume ---------------------------------------------------------------------------------------
    m("checkpoint-saves-nan-model", TRAINER,
      "bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]", "bad = []",
      "test_checkpoints.py", "a checkpoint with NaN weights is written"),
    m("resume-forgets-position-in-epoch", CHECKPOINT, 's.batch = int(checkpoint.get("batch", 0))',
      "s.batch = 0", "test_resume.py", "a run resumed mid-epoch repeats the epoch's first batches"),
    m("resume-accepts-any-change", "src/dltrain/resume.py",
      "for key, a, b in config_changes(old, new) if not is_safe(key)]",
      "for key, a, b in config_changes(old, new) if False]", "test_checkpoints.py",
      "resuming with another optimizer.lr is not refused"),
    # -- validation ------------------------------------------------------------------------------------------------
    m("validation-lr-zero", "src/dltrain/validation.py", 'range_problem("optimizer.lr", node.get("lr"), lo=0, lo_open=True)',
      'range_problem("optimizer.lr", node.get("lr"), lo=0)', "test_validation.py", "optimizer.lr=0 is accepted"),
    m("validation-dropout-one", "src/dltrain/schema.py", "dropout: float = rule(0.0, rng=(0, 1), hi_open=True)",
      "dropout: float = rule(0.0, rng=(0, 1))", "test_validation.py", "regularizer.dropout=1.0 is accepted"),
    m("preset-sweep-typo", "configs/experiment/lr_schedules.yaml", "warmup_cosine,onecycle,plateau",
      "warmup_cosine,onecycle,plateu", "test_preset_sweeps.py", "a misspelt option in a preset's own sweep"),
    # -- the data path ---------------------------------------------------------------------------------------------
    m("same-order-every-epoch", DATA + "loader.py", "manual_seed(self.seed * 100_003 + self.epoch)",
      "manual_seed(self.seed * 100_003)", "test_loader.py", "every epoch sees the batches in the same order"),
    m("standardize-by-variance", DATA + "loader.py", "ch.float().std() / 255) for ch in x01]",
      "ch.float().var() / 255) for ch in x01]", "test_loader.py", "standardisation divides by the variance"),
    m("val-split-leaks-into-train", DATA + "__init__.py", "val, train = order[:val_size], order[val_size:]",
      "val, train = order[:val_size], order", "test_loader.py", "the validation samples are trained on"),
    m("crop-offsets-short", DATA + "augment.py", "span = 2 * padding + 1", "span = 2 * padding",
      "test_augment.py", "random crop never shifts by the full padding"),
    m("val-loader-augmented", DATA + "__init__.py", "val=BatchLoader(val_x, val_y, **common, **shard),",
      "val=BatchLoader(val_x, val_y, augment=build_augment(cfg.augment), **common, **shard),",
      "test_augment.py test_option_effects.py", "validation batches are augmented"),
]


def list_problems(mutations: list[Mutation]) -> list[str]:
    """Every entry whose original text is not exactly once in its file, or whose tests do not exist."""
    problems = []
    if len({mu.name for mu in mutations}) != len(mutations):
        problems.append("two mutations share a name")
    for mu in mutations:
        path = ROOT / mu.file
        if not path.is_file():
            problems.append(f"{mu.name}: {mu.file} does not exist")
            continue
        count = path.read_text().count(mu.original)
        if count != 1:
            problems.append(f"{mu.name}: {mu.original!r} occurs {count} times in {mu.file} (must be exactly once)")
        if mu.original == mu.replacement:
            problems.append(f"{mu.name}: the replacement is the original")
        problems += [f"{mu.name}: no test file {t}" for t in mu.tests if not (ROOT / t).is_file()]
    return problems


def copy_tree(dest: Path) -> None:
    """The files git knows of or would add (tracked, and untracked but not ignored): no .venv, outputs, data."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def environment(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    old = os.environ.get("PYTHONPATH")
    env.update(PYTHONPATH=str(tree / "src") + (os.pathsep + old if old else ""), OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


def check_imports(tree: Path) -> str | None:
    """None when Python, as the tests will start it in `tree`, imports the copy's dltrain and configs/."""
    code = ("import dltrain, hydra_plugins.dltrain_search.basic as b; from dltrain.config import config_dir; "
            "print(dltrain.__file__); print(b.__file__); print(config_dir())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tree, env=environment(tree), capture_output=True, text=True)
    if proc.returncode != 0:
        return proc.stderr
    wrong = [line for line in proc.stdout.split() if not Path(line).resolve().is_relative_to(tree.resolve())]
    return f"imported from outside the copy: {wrong}" if wrong else None


def run_tests(tree: Path, tests: tuple[str, ...], timeout: int) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout' | 'error', seconds, the output's tail)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(cmd, cwd=tree, env=environment(tree), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    # pytest: 0 all passed, 1 some failed, 2 collection errors (the mutation broke an import): both count as caught
    verdict = {0: "passed", 1: "failed", 2: "failed"}.get(proc.returncode, "error")
    return verdict, time.perf_counter() - start, (proc.stdout + proc.stderr)[-2000:]


def run_mutation(base: Path, work: Path, mu: Mutation, timeout: int):
    tree = work / mu.name
    shutil.copytree(base, tree)
    path = tree / mu.file
    path.write_text(path.read_text().replace(mu.original, mu.replacement, 1))
    verdict, seconds, tail = run_tests(tree, mu.tests, timeout)
    shutil.rmtree(tree, ignore_errors=True)
    return mu, verdict, seconds, tail


CAUGHT = {"failed": "caught", "timeout": "caught (timeout)", "passed": "SURVIVED", "error": "ERROR"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="print the mutations and stop")
    parser.add_argument("--jobs", type=int, default=MAX_JOBS, help=f"mutations at once (at most {MAX_JOBS})")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutation's tests")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests on the unmutated copy")
    args = parser.parse_args(argv)
    chosen = [mu for mu in MUTATIONS if args.only in mu.name]
    if args.list:
        for mu in chosen:
            print(f"{mu.name:34s} {mu.file}: {mu.what}  [{' '.join(mu.tests)}]")
        return 0
    problems = list_problems(MUTATIONS)
    if problems:
        print("the mutation list does not match the code (update MUTATIONS):", *problems, sep="\n  ", file=sys.stderr)
        return 2
    if not chosen:
        print(f"no mutation name contains {args.only!r}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="dltrain-mutations-"))
    try:
        base = work / "base"
        copy_tree(base)
        wrong = check_imports(base)
        if wrong:
            print(f"the copy is not what the tests would import: {wrong}", file=sys.stderr)
            return 1
        if not args.no_baseline:
            files = tuple(sorted({t for mu in chosen for t in mu.tests}))
            verdict, seconds, tail = run_tests(base, files, args.timeout * 2)
            print(f"baseline: {len(files)} test files on the unmutated copy: {verdict} ({seconds:.0f} s)", flush=True)
            if verdict != "passed":
                print(tail, file=sys.stderr)
                return 1
        with ThreadPoolExecutor(max_workers=max(1, min(args.jobs, MAX_JOBS))) as pool:
            futures = [pool.submit(run_mutation, base, work, mu, args.timeout) for mu in chosen]
            results = []
            for future in futures:
                mu, verdict, seconds, tail = future.result()
                results.append((mu, verdict, seconds))
                print(f"  {mu.name}: {CAUGHT[verdict]} ({seconds:.0f} s)", flush=True)
                if verdict in ("passed", "error"):
                    print("    " + tail.strip().replace("\n", "\n    ")[-1200:], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| mutation | what | tests run | caught? | s |\n|---|---|---|---|---|")
    for mu, verdict, seconds in results:
        tests = " ".join(t.removeprefix("tests/") for t in mu.tests)
        print(f"| {mu.name} | {mu.what} | {tests} | {CAUGHT[verdict]} | {seconds:.0f} |")
    bad = [mu.name for mu, verdict, _ in results if verdict in ("passed", "error")]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutations caught in {time.perf_counter() - started:.0f} s"
          + (f"; not caught: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
