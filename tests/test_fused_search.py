"""A search's trials trained as one fused group (`hparams_search=… +launcher=fused`), in process: each member
reports to its own trial through the study's storage, a member the pruner stops ends alone (status pruned, its
slice no longer updated) while the others train on exactly as without it, and the sweeper tells the study each
member's ending as it tells an ordinary trial's. The real CLI, a second worker and resume=auto: test_search.py's
fused tests."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import read_metrics, read_scalars

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


def launch(fast_cfg, out, pruner: str, monkeypatch):
    """The fused launcher's training of one chunk of three trials of a fresh study; (study, trials' numbers,
    run dirs, the launcher's values, the FusedGroup that trained them)."""
    from dltrain.fused import group as group_module

    url = f"sqlite:///{out / 'optuna.db'}"
    out.mkdir(parents=True)
    study = study_with_reference(url)
    numbers = [study.ask().number for _ in MEMBERS]
    dirs = [out / f"trial={n}" for n in numbers]
    jobs = [(fast_cfg(*COMMON, *v, output_dir=d), [*COMMON, *v]) for v, d in zip(MEMBERS, dirs)]
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


def test_each_member_reports_to_its_own_trial_and_a_pruned_member_ends_alone(fast_cfg, tmp_path, one_thread,
                                                                            hydra_cleared, monkeypatch):
    study, numbers, dirs, values, group = launch(fast_cfg, tmp_path / "pruned", "median", monkeypatch)
    _, _, plain_dirs, plain_values, plain = launch(fast_cfg, tmp_path / "plain", "none", monkeypatch)
    runs = [read_metrics(d) for d in dirs]
    assert [r["status"] for r in runs] == ["completed", "pruned", "completed"]
    assert all(read_metrics(d)["status"] == "completed" for d in plain_dirs)
    trials = {t.number: t for t in study.get_trials()}
    for number, run_dir, run, value in zip(numbers, dirs, runs, values):
        assert run["trial"]["number"] == number                          # its own trial, not the chunk's first
        assert trials[number].intermediate_values == best_so_far(run_dir)  # every epoch it ran, its own curve
        assert run["trial"]["value"] == run["best"]["val/acc"]
        assert value == run["best"]["val/acc"]                           # what the launcher hands the sweeper
    pruned, pruned_dir = runs[1], dirs[1]
    assert pruned["epochs"] == 1 and pruned["test"] == {} and set(trials[numbers[1]].intermediate_values) == {1}
    assert "run pruned: trial" in (pruned_dir / "train.log").read_text()
    # its slice of the stacked model is no longer trained: it holds the weights its run ended with
    member = group.members[1]
    for name, p in member.model.named_parameters():
        assert torch.equal(group.model.params[name][1].detach(), p.detach()), name
    # the others train exactly as in the same group without pruning
    for k in (0, 2):
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
