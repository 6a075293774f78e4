"""A search's trials trained as one fused group (`hparams_search=… +launcher=fused`), in process: each member
reports to its own trial through the study's storage, a member the pruner stops ends alone (status pruned, its
slice no longer updated) while the others train on exactly as without it, and the sweeper tells the study each
member's ending as it tells an ordinary trial's. Through the real CLI (slow): two fused workers sharing one study,
and a killed fused search continued with resume=auto."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import read_metrics, read_scalars
from tests.test_search import trial_dirs

optuna = pytest.importorskip("optuna")

from hydra.conf import HydraConf  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.core.utils import JobReturn  # noqa: E402

from dltrain import study as dstudy  # noqa: E402
from hydra_plugins.dltrain_fused.fused_launcher import FusedLauncher  # noqa: E402

COMMON = ["optimizer=momentum", "trainer.max_epochs=3", "trainer.limit_train_batches=8",
          "trainer.diagnostics_every_n_steps=0", "logger=none"]
# After one epoch (measured): val/acc ≈ 0.21 and 0.18 for the two that learn, 0.11 (chance) at lr=1e-6.
MEMBERS = [["optimizer.lr=0.05", "seed=0"], ["optimizer.lr=1e-6", "seed=1"], ["optimizer.lr=0.1", "seed=2"]]
REFERENCE = 0.15  # a finished trial's val/acc at every epoch: the median pruner's bar (one trial: its value)
MEDIAN = {"n_startup_trials": 1, "n_warmup_steps": 0}


@pytest.fixture
def hydra_cleared():
    """The launcher makes each job's Hydra config current, as Hydra does; other tests must not see it."""
    yield
    HydraConfig.instance().cfg = None


def study_with_reference(url: str):
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    trial = study.ask()
    for epoch in (1, 2, 3):
        trial.report(REFERENCE, epoch)
    study.tell(trial, REFERENCE)
    return study


def sweep_config(cfg, number: int, url: str, pruner: str):
    """A trial's whole config as the sweeper's launch hands it over: the run's keys and Hydra's node, whose
    `hydra.sweeper` names the study, the storage and this trial (callbacks/pruning.py reads it)."""
    node = OmegaConf.structured(HydraConf)
    node.sweeper = {"trial": number, "storage": url, "study_name": "s", "objective": "val/acc",
                    "direction": "maximize", "pruner": pruner, "pruner_args": MEDIAN if pruner != "none" else {}}
    whole = OmegaConf.create({"hydra": node})
    whole.merge_with(cfg)
    return whole


def launch(fast_cfg, out, pruner: str, monkeypatch, members=MEMBERS):
    """The fused launcher's training of one chunk of three trials of a fresh study; (study, trials' numbers,
    run dirs, the launcher's values, the FusedGroup that trained them)."""
    from dltrain.fused import group as group_module

    url = f"sqlite:///{out / 'optuna.db'}"
    out.mkdir(parents=True)
    study = study_with_reference(url)
    numbers = [study.ask().number for _ in members]
    dirs = [out / f"trial={n}" for n in numbers]
    jobs = [(fast_cfg(*COMMON, *v, output_dir=d), [*COMMON, *v]) for v, d in zip(members, dirs)]
    configs = [sweep_config(cfg, n, url, pruner) for (cfg, _), n in zip(jobs, numbers)]
    groups = []

    class Kept(group_module.FusedGroup):
        def __init__(self, trainers):
            super().__init__(trainers)
            groups.append(self)

    monkeypatch.setattr(group_module, "FusedGroup", Kept)
    values = FusedLauncher(cpu="fuse").fused(list(range(len(jobs))), jobs, configs)
    return study, numbers, dirs, [values[i] for i in range(len(jobs))], groups[0]


def best_so_far(run_dir) -> dict[int, float]:
    curve, best = {}, None
    for epoch, value in read_scalars(run_dir)["val/acc"]:
        best = value if best is None else max(best, value)
        curve[epoch] = best
    return curve


def untimed(final: dict) -> dict:
    return {k: v for k, v in final.items() if not k.startswith(("time/", "throughput/"))}


@pytest.mark.parametrize("hopeless", [1, 0], ids=["a-member", "the-lead-member"])  # the lead: the group's loader
def test_each_member_reports_to_its_own_trial_and_a_pruned_member_ends_alone(fast_cfg, tmp_path, one_thread,
                                                                            hydra_cleared, monkeypatch, hopeless):
    members = [MEMBERS[1] if k == hopeless else MEMBERS[0 if k == 1 else k] for k in range(3)]
    study, numbers, dirs, values, group = launch(fast_cfg, tmp_path / "pruned", "median", monkeypatch, members)
    _, _, plain_dirs, plain_values, plain = launch(fast_cfg, tmp_path / "plain", "none", monkeypatch, members)
    others = [k for k in range(3) if k != hopeless]
    runs = [read_metrics(d) for d in dirs]
    assert [r["status"] for r in runs] == ["pruned" if k == hopeless else "completed" for k in range(3)]
    assert all(read_metrics(d)["status"] == "completed" for d in plain_dirs)
    trials = {t.number: t for t in study.get_trials()}
    for number, run_dir, run, value in zip(numbers, dirs, runs, values):
        assert run["trial"]["number"] == number                          # its own trial, not the chunk's first
        assert trials[number].intermediate_values == best_so_far(run_dir)  # every epoch it ran, its own curve
        assert run["trial"]["value"] == run["best"]["val/acc"]
        assert value == run["best"]["val/acc"]                           # what the launcher hands the sweeper
    pruned, pruned_dir = runs[hopeless], dirs[hopeless]
    assert pruned["epochs"] == 1 and pruned["test"] == {}
    assert set(trials[numbers[hopeless]].intermediate_values) == {1}
    assert "run pruned: trial" in (pruned_dir / "train.log").read_text()
    # its slice of the stacked model is no longer trained: it holds the weights its run ended with
    member = group.members[hopeless]
    for name, p in member.model.named_parameters():
        assert torch.equal(group.model.params[name][hopeless].detach(), p.detach()), name
    # the others train exactly as in the same group without pruning
    for k in others:
        assert runs[k]["epochs"] == 3
        assert untimed(runs[k]["final"]) == untimed(read_metrics(plain_dirs[k])["final"])
        assert values[k] == plain_values[k]
        mine, theirs = group.members[k].model.state_dict(), plain.members[k].model.state_dict()
        for name, value in theirs.items():
            assert torch.equal(mine[name], value), name


def test_the_sweeper_tells_the_study_each_members_ending(fast_cfg, tmp_path, one_thread, hydra_cleared,
                                                         monkeypatch):
    from hydra_plugins.dltrain_search.optuna_sweeper import OptunaSweeper, Worker

    study, numbers, dirs, values, _ = launch(fast_cfg, tmp_path / "s", "median", monkeypatch)
    sweeper = OptunaSweeper(sampler=None)
    sweeper.sweep_dir, sweeper.worker = tmp_path / "s", Worker(tmp_path / "s")
    sweeper.store = dstudy.open_storage(f"sqlite:///{tmp_path / 's' / 'optuna.db'}")
    sweeper.study_id = sweeper.store.get_study_id_from_name("s")
    try:
        for number, run_dir in zip(numbers, dirs):
            ret = JobReturn(hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}}))
            sweeper.tell(study, number, ret)
    finally:
        sweeper.worker.release()
    trials = {t.number: t for t in study.get_trials()}
    states = [trials[n].state.name for n in numbers]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert [trials[n].value for n in (numbers[0], numbers[2])] == [values[0], values[2]]
    assert all(trials[n].user_attrs["dltrain"]["job_dir"] == str(d) for n, d in zip(numbers, dirs))


def test_resume_auto_with_nothing_to_continue_is_fusible_and_with_a_result_or_last_pt_is_not(fast_cfg, tmp_path):
    from dltrain.fused.grouping import group_jobs
    from hydra_plugins.dltrain_fused.fused_launcher import _as_grouped

    dirs = {name: tmp_path / name for name in ("fresh0", "fresh1", "finished", "started")}
    for d in dirs.values():
        (d / "checkpoints").mkdir(parents=True)
    (dirs["finished"] / "metrics.json").write_text('{"status": "completed"}')
    (dirs["started"] / "checkpoints" / "last.pt").write_bytes(b"")
    cfgs = [fast_cfg("resume=auto", f"seed={k}", output_dir=d) for k, d in enumerate(dirs.values())]
    groups, alone = group_jobs([_as_grouped(cfg) for cfg in cfgs])
    assert groups == [[0, 1]] and set(alone) == {2, 3} and all("resume=auto" in r for r in alone.values())
    assert all(cfg.resume == "auto" for cfg in cfgs)   # the jobs themselves keep their resume=auto


# -- through the real CLI ---------------------------------------------------------------------------------------
TINY = ["data=synthetic", "model.width=32", "trainer.progress_bar=false", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.diagnostics_every_n_steps=0", "logger=none",
        "++hydra.callbacks.report.plots=false"]
FUSED_SEARCH = ["-m", "hparams_search=optuna", "+launcher=fused", "hydra.launcher.cpu=fuse", "data.batch_size=64",
                "hydra.sweeper.n_jobs=2", *TINY]


LOCK_PROBE = "+hydra.callbacks.lockprobe._target_=tests.fused_search_helpers.LockProbe"


def assert_told_as_ordinary_trials(sweep, n: int) -> dict:
    """Every trial of the study ran once, in its own directory, and the study holds what its run says."""
    study = optuna.load_study(study_name="dltrain", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = [t for t in study.get_trials() if not t.user_attrs.get("dltrain_surplus")]
    dirs = trial_dirs(sweep)
    assert sorted(t.number for t in trials) == sorted(dirs) and len(dirs) == n
    for t in trials:
        run = read_metrics(dirs[t.number])
        assert run["trial"]["number"] == t.number
        assert f"optimizer.lr={t.params['optimizer.lr']!r}" in run["overrides"]
        assert t.intermediate_values == best_so_far(dirs[t.number])
        assert (t.state.name, run["status"]) in {("COMPLETE", "completed"), ("PRUNED", "pruned")}
        if t.state.name == "COMPLETE":
            assert t.value == run["best"]["val/acc"]
    return {t.number: t for t in trials}


@pytest.mark.slow
def test_two_fused_workers_share_one_study_and_never_run_a_trial_twice(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.sweep_helpers import PROBE, probe_env

    sweep = tmp_path / "sweep"
    # each job waits at its start until two jobs have started: the two workers overlap, each runs some trials
    args = [sys.executable, str(ROOT / "train.py"), *FUSED_SEARCH, "hydra.sweeper.n_trials=6", "trainer.max_epochs=3",
            "hydra.sweeper.pruner=successive_halving", "+hydra.sweeper.pruner_args.reduction_factor=2",
            "+hydra.sweeper.pruner_args.min_resource=1", f"hydra.sweep.dir={sweep}", PROBE, LOCK_PROBE]
    workers = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **probe_env(barrier=2)}) for _ in range(2)]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    trials = assert_told_as_ordinary_trials(sweep, 6)
    dirs = trial_dirs(sweep)
    # each worker trained its batches of two trials as one stacked model, in its own process
    assert all("as one stacked model" in out for out in outputs), outputs
    by_pid = {}
    for number, d in dirs.items():
        by_pid.setdefault((d / "pid").read_text(), []).append(number)
    assert set(by_pid) == {str(w.pid) for w in workers}
    assert {(d / "barrier").read_text() for d in dirs.values()} == {"met"}
    # a prepared member holds its directory's lock before any member trains: never "failed" to the other worker
    assert {(d / "locked_at_prepare").read_text() for d in dirs.values()} == {"yes"}
    assert {t.user_attrs["dltrain"]["worker"].rsplit("-", 1)[1] for t in trials.values()} == set(by_pid)
    # the end-of-sweep check and the report see every member as a run: the worker that ends last sees all six ended
    ends = [line for out in outputs for line in out.splitlines() if line.startswith(f"dltrain: sweep {sweep}: ")]
    counts = [dict((s.split()[1], int(s.split()[0])) for s in line.split(": ", 2)[2].split(", ")) for line in ends]
    assert any(set(c) <= {"completed", "pruned"} and sum(c.values()) == 6 for c in counts), ends
    summary = (sweep / "summary.md").read_text()
    assert "6 runs" in summary and "6 of 6 trials" in summary


@pytest.mark.slow
def test_a_killed_fused_search_resumes_and_never_repeats_a_trial(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, run_cli

    sweep = tmp_path / "sweep"
    # epochs of 20 batches: long enough to be killed inside one
    args = [*FUSED_SEARCH, "hydra.sweeper.n_trials=6", "trainer.max_epochs=3", "trainer.limit_train_batches=20",
            f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, done, midway = time.monotonic() + 240, [], []
    # killed while the second fused batch trains: its members have a last.pt and no result yet
    while not (len(done) >= 2 and midway) and proc.poll() is None and time.monotonic() < deadline:
        done = [p.parent for p in sweep.glob("trial=*/metrics.json") if read_metrics(p.parent)["status"] == "completed"]
        midway = [p.parents[1] for p in sweep.glob("trial=*/checkpoints/last.pt")
                  if not (p.parents[1] / "metrics.json").exists()]
        time.sleep(0.01)
    assert proc.poll() is None, f"the search ended before it could be killed:\n{proc.stderr.read()}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0

    def status(d):
        return read_metrics(d)["status"] if (d / "metrics.json").exists() else None

    # looked at again now that nothing writes: a member may have ended between the last look and the signal
    done = [d for d in sweep.glob("trial=*") if status(d) == "completed"]
    midway = [p.parents[1] for p in sweep.glob("trial=*/checkpoints/last.pt")
              if status(p.parents[1]) in (None, "interrupted")]
    before = {p: (p / "metrics.json").read_bytes() for p in done}

    resumed = run_cli([*args, "resume=auto"], cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    trials = assert_told_as_ordinary_trials(sweep, 6)
    assert {t.state.name for t in trials.values()} == {"COMPLETE"}
    for p, content in before.items():   # the completed trials were kept as they were, not run again
        assert (p / "metrics.json").read_bytes() == content
        assert (p / "train.log").read_text().count("summary") == 1
    for p in midway:   # a member killed inside its run continues from its last.pt, as an ordinary run would
        assert f"resumed from {p / 'checkpoints' / 'last.pt'}" in (p / "train.log").read_text()
    # the trials started after the resume (resume=auto, nothing to continue) are fused as any new trials
    assert "as one stacked model" in resumed.stdout + resumed.stderr


def test_a_stop_signal_while_a_trial_is_asked_for_waits_though_other_threads_run():
    """signals_held (optuna_sweeper.py) with another thread alive, as a fused group's TensorBoard writers are in
    the sweeper's process: a mask would hold the signal in this thread only, and the kernel would hand it to the
    other one, whose arrival Python runs inside the block (a RUNNING trial naming no worker, never resumed)."""
    import os
    import signal
    import threading

    from hydra_plugins.dltrain_search.optuna_sweeper import signals_held

    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: got.append("delivered"))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(1000):  # bytecodes at which Python runs an arrived signal's handler
                pass
            got.append("inside")
        assert got == ["inside", "delivered"]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stop.set()
