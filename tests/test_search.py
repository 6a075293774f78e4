"""python train.py -m hparams_search=optuna|random through the real CLI: the study in its storage (read back
with Optuna's own API), the lr_search preset's second stage, resuming a killed search, two workers on one study
(the default SQLite file, a real PostgreSQL server; journal files: test_optuna_sweeper.py), pruning, a search
whose whole range diverges, and mistakes refused before any trial."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST, ROOT, run_cli
from tests.sweep_helpers import PROBE, probe_env

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

# Tiny trials: two training batches and one validation batch an epoch, no diagnostics, no TensorBoard log, and
# a report without its plots (test_optuna_search_runs_its_trials_and_reports_the_best keeps them).
TINY = [*FAST, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.diagnostics_every_n_steps=0",
        "logger=none"]
NO_PLOTS = ["++hydra.callbacks.report.plots=false"]
ENV = {"OMP_NUM_THREADS": "1"}


def the_sweep(tmp_path: Path) -> Path:
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    return sweep


def trial_dirs(sweep: Path) -> dict[int, Path]:
    """{trial number: its run directory} from the directory names (trial=<number>,<overrides>)."""
    dirs = {}
    for path in sweep.glob("trial=*"):
        number = int(path.name.split(",", 1)[0].split("=", 1)[1])
        assert number not in dirs, f"trial {number} has two run directories"
        dirs[number] = path
    return dirs


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def real_trials(study) -> list:
    """The study's trials less those a worker asked for after the study was full (never run, FAILED)."""
    return [t for t in study.get_trials() if not t.user_attrs.get("dltrain_surplus")]


def test_optuna_search_runs_its_trials_and_reports_the_best(tmp_path):
    proc = run_cli(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=6", *TINY], cwd=tmp_path, env=ENV)
    sweep = the_sweep(tmp_path)
    study = optuna.load_study(study_name="dltrain", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    dirs = trial_dirs(sweep)
    assert sorted(dirs) == list(range(6))
    best_of_runs = None
    for t in trials:
        run = metrics(dirs[t.number])
        assert f"optimizer.lr={t.params['optimizer.lr']!r}" in run["overrides"]   # the run used the trial's values
        assert f"data.batch_size={t.params['data.batch_size']}" in run["overrides"]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert run["status"] == "completed"
            assert t.value == run["best"]["val/acc"]
            assert sorted(t.intermediate_values) == [1, 2]   # reported after each epoch: the best so far
            assert t.intermediate_values[2] == run["best"]["val/acc"]
            best_of_runs = max(best_of_runs or 0.0, run["best"]["val/acc"])
        else:
            assert t.state == optuna.trial.TrialState.FAIL and run["status"] == "diverged"
    assert best_of_runs is not None and study.best_value == best_of_runs
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == best_of_runs and results["best_trial"] == study.best_trial.number
    assert set(results["best_params"]) == {"optimizer.lr", "data.batch_size"}
    summary = (sweep / "summary.md").read_text()
    assert f"**Best trial {study.best_trial.number}**: val/acc = {best_of_runs:.4f}" in summary
    assert "## Optuna study" in summary and "sweep summary" in proc.stdout
    assert (sweep / "optuna_history.png").is_file() and (sweep / "optuna_params.png").is_file()

    # that search as stage 1 of the lr_search preset: stage 2 draws lr around its 3 best trials (÷3 … ×3) and
    # fixes the batch size to the best trial's
    run_cli(["-m", "+experiment=lr_search", f"lr_search.coarse={sweep}", "hydra.sweeper.n_trials=2", *TINY, *NO_PLOTS,
             f"hydra.sweep.dir={tmp_path / 'fine'}"], cwd=tmp_path, env=ENV)
    top = sorted((t for t in trials if t.value is not None), key=lambda t: -t.value)[:3]
    lo, hi = min(t.params["optimizer.lr"] for t in top) / 3, max(t.params["optimizer.lr"] for t in top) * 3
    fine = optuna.load_study(study_name="lr_search", storage=f"sqlite:///{tmp_path / 'fine' / 'optuna.db'}")
    assert len(fine.trials) == 2 and set(fine.trials[0].params) == {"optimizer.lr"}
    assert all(lo * 0.999 <= t.params["optimizer.lr"] <= hi * 1.001 for t in fine.trials)
    for run in trial_dirs(tmp_path / "fine").values():
        assert f"data.batch_size={study.best_trial.params['data.batch_size']}" in metrics(run)["overrides"]


def test_a_killed_search_resumes_with_its_completed_trials_and_never_repeats_one(tmp_path):
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=6", *TINY, *NO_PLOTS, "trainer.max_epochs=3",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    deadline = time.monotonic() + 240
    done: list[Path] = []
    while len(done) < 3 and proc.poll() is None and time.monotonic() < deadline:
        done = [p.parent for p in sweep.glob("trial=*/metrics.json") if metrics(p.parent)["status"] == "completed"]
        time.sleep(0.05)
    assert proc.poll() is None, f"the search ended before it could be killed:\n{proc.stderr.read()}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    before = {p: (p / "metrics.json").read_bytes() for p in done}
    study = optuna.load_study(study_name="dltrain", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert 3 <= len(study.get_trials()) < 6

    run_cli([*args, "resume=auto"], cwd=tmp_path, env=ENV)
    study = optuna.load_study(study_name="dltrain", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6))
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    dirs = trial_dirs(sweep)
    assert sorted(dirs) == list(range(6))
    for p, content in before.items():   # the completed trials were kept as they were, not run again
        assert (p / "metrics.json").read_bytes() == content
        assert (p / "train.log").read_text().count("summary") == 1
    for t in trials:
        assert t.value == metrics(dirs[t.number])["best"]["val/acc"]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port, for one test."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL's server is not installed: `apt-get install -y postgresql` (as .ci/run does) "
                    "runs this test against a real server")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install -e '.[test]'")
    bin_dir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="dltrain-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:   # the server refuses to run as root: run it as Debian's postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd):
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "dltrain", "--auth=trust", "-E", "UTF8")
    run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://dltrain@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])   # journal files: test_optuna_sweeper.py
def test_two_workers_started_at_once_share_one_study_and_never_run_a_trial_twice(storage, tmp_path, request):
    sweep = tmp_path / "sweep"
    url = request.getfixturevalue("postgres_url") if storage == "postgresql" else None
    args = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=4",
            *TINY, *NO_PLOTS, f"hydra.sweep.dir={sweep}", PROBE, *([f"hydra.sweeper.storage='{url}'"] if url else [])]
    # each job waits at its start until two jobs have started: `met` in every job shows the workers overlapped
    env = {**os.environ, **probe_env(barrier=2)}
    workers = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read()
    study = optuna.load_study(study_name="dltrain", storage=url or f"sqlite:///{sweep / 'optuna.db'}")
    trials = real_trials(study)
    assert sorted(t.number for t in trials) == sorted({t.number for t in trials})   # no number twice
    assert len(trials) == 4 and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    dirs = trial_dirs(sweep)
    assert sorted(dirs) == sorted(t.number for t in trials)   # each trial ran once, in its own directory
    assert {(d / "barrier").read_text() for d in dirs.values()} == {"met"}
    # the basic launcher runs each job in its worker's process: two process ids, the two workers
    assert {(d / "pid").read_text() for d in dirs.values()} == {str(w.pid) for w in workers}
    assert len({t.user_attrs["dltrain"]["worker"] for t in trials}) == 2


def test_successive_halving_stops_hopeless_trials_early_and_still_finds_the_best(tmp_path):
    # half of the learning rates are hopeless: at 1e-6 nothing is learnt in 4 epochs, at 0.3 or 1.0 a lot is
    run_cli(["-m", "hparams_search=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=8",
             "hydra.sweeper.pruner=successive_halving", "+hydra.sweeper.pruner_args.reduction_factor=2",
             "+hydra.sweeper.pruner_args.min_resource=1", "optimizer.lr=choice(1e-6, 3e-6, 0.3, 1.0)",
             "data.batch_size=64", *TINY, *NO_PLOTS, "trainer.max_epochs=4", "trainer.limit_train_batches=8",
             "trainer.limit_val_batches=2"], cwd=tmp_path, env=ENV)
    sweep = the_sweep(tmp_path)
    study = optuna.load_study(study_name="dltrain", storage=f"sqlite:///{sweep / 'optuna.db'}")
    dirs = trial_dirs(sweep)
    runs = {t.number: metrics(dirs[t.number]) for t in study.trials}
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    hopeless = [t for t in study.trials if t.params["optimizer.lr"] < 1e-4]
    assert hopeless and len(hopeless) < len(study.trials), "the seeded sampler drew both kinds of learning rate"
    assert pruned, "successive halving pruned nothing"
    for t in pruned:   # stopped at once: fewer epochs, no test evaluation, the epoch it was pruned at reported last
        assert runs[t.number]["status"] == "pruned" and runs[t.number]["epochs"] < 4
        assert runs[t.number]["epochs"] == t.last_step and not runs[t.number]["test"]
    assert [t for t in hopeless if t.state == optuna.trial.TrialState.PRUNED], "no hopeless trial was pruned"
    assert sum(r["epochs"] for r in runs.values()) < 4 * len(runs)
    best_of_runs = max(r["best"]["val/acc"] for r in runs.values())
    assert study.best_value == best_of_runs and study.best_trial.params["optimizer.lr"] >= 0.3
    summary = (sweep / "summary.md").read_text()
    assert "### Pruned trials" in summary
    assert all(f"| {t.number} | {t.last_step} |" in summary for t in pruned)


def test_a_search_whose_range_all_diverges_ends_cleanly(tmp_path):
    # a few real steps: the loss of step 1 is computed before the first update, so it is still finite
    run_cli(["-m", "hparams_search=random", "hydra.sweeper.n_trials=2", "optimizer.lr=tag(log, interval(1e3, 1e4))",
             *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.log_every_n_steps=1"],
            cwd=tmp_path, env=ENV)
    sweep = the_sweep(tmp_path)
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")]
    assert statuses == ["diverged", "diverged"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] is None and results["trials"] == {"fail": 2}
    summary = (sweep / "summary.md").read_text()
    assert "**diverged**" in summary and "No trial completed" in summary


def test_mistakes_in_a_search_are_listed_together_before_any_trial(tmp_path):
    proc = run_cli(["-m", "hparams_search=optuna", "optimizer.lrr=tag(log, interval(1e-3, 1e-1))",
                    "hydra.sweeper.pruner=asha", "hydra.sweeper.objective=val/accuracy", *TINY],
                   cwd=tmp_path, check=False, env=ENV)
    assert proc.returncode == 2, proc.stderr
    for needle in ("optimizer.lrr", "did you mean optimizer.lr", "hydra.sweeper.pruner='asha'", "successive_halving",
                   "hydra.sweeper.objective='val/accuracy'", "val/acc"):
        assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("optuna.db")) and not list(tmp_path.rglob("metrics.json"))
