"""Fused groups (dltrain/fused/group.py) against the same runs trained one by one: the same initial weights,
the same parameters and batch-norm statistics after 20 steps, the same validation accuracy, the same files;
a diverging member leaves the others as they were. In process, on the small synthetic setting."""
from __future__ import annotations

import pytest
import torch

from dltrain.checkpoint import load
from dltrain.fused.group import FusedGroup
from dltrain.fused.grouping import group_jobs, structure, unfusible_reason
from dltrain.nn.noise import stochastic_modules
from dltrain.trainer import Trainer
from tests.conftest import read_metrics, read_scalars

# 20 optimizer steps in one short epoch, validation on the synthetic set's 256 samples, no TensorBoard (speed).
STEPS = ["trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.diagnostics_every_n_steps=0",
         "logger=none"]


@pytest.fixture
def float64(monkeypatch):
    """Models and inputs in float64, so that a difference after 20 steps is a bug, not float32 rounding
    amplified by Adam's division by √v on near-zero gradients (measured ~1e-3 relative in float32)."""
    from dltrain.data.loader import BatchLoader

    plain_iter = BatchLoader.__iter__

    def double_batches(self):
        for x, y in plain_iter(self):
            yield x.double(), y

    monkeypatch.setattr(BatchLoader, "__iter__", double_batches)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


def member_configs(fast_cfg, tmp_path, common, variants, tag):
    return [fast_cfg(*STEPS, *common, *v, output_dir=tmp_path / tag / f"m{k}") for k, v in enumerate(variants)]


def ordinary(cfgs):
    trainers = [Trainer(cfg) for cfg in cfgs]
    results = [t.fit() for t in trainers]
    return trainers, results


def fused(cfgs):
    trainers = [Trainer(cfg) for cfg in cfgs]
    results = FusedGroup(trainers).fit()
    return trainers, results


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def assert_same_members(fused_trainers, plain_trainers, fused_results, plain_results, tol=1e-5):
    for f, p, fr, pr in zip(fused_trainers, plain_trainers, fused_results, plain_results):
        init_f = load(f.out_dir / "checkpoints" / "init.pt")["model"]
        init_p = load(p.out_dir / "checkpoints" / "init.pt")["model"]
        for name in init_p:
            assert torch.equal(init_f[name], init_p[name]), name      # identical initial weights
        state_f, state_p = f.model.state_dict(), p.model.state_dict()
        assert state_f.keys() == state_p.keys()
        for name, value in state_p.items():
            if value.is_floating_point():
                assert relative_error(state_f[name], value) < tol, (name, relative_error(state_f[name], value))
            else:
                assert torch.equal(state_f[name], value), name         # num_batches_tracked
        assert fr["steps"] == pr["steps"] == 20
        assert fr["status"] == pr["status"] == "completed"
        assert round(fr["final"]["val/acc"], 3) == round(pr["final"]["val/acc"], 3)
        assert abs(fr["final"]["val/loss"] - pr["final"]["val/loss"]) < 1e-4


def one_group_against_its_runs(fast_cfg, tmp_path, common, variants):
    """The variants as one fused group and one by one; asserts they end the same; (fused, plain) trainers."""
    plain_cfgs = member_configs(fast_cfg, tmp_path, common, variants, "plain")
    fused_cfgs = member_configs(fast_cfg, tmp_path, common, variants, "fused")
    assert len(group_jobs(fused_cfgs)[0]) == 1 and not group_jobs(fused_cfgs)[1]  # one group of all four
    plain_trainers, plain_results = ordinary(plain_cfgs)
    fused_trainers, fused_results = fused(fused_cfgs)
    assert_same_members(fused_trainers, plain_trainers, fused_results, plain_results)
    return fused_trainers, plain_trainers


@pytest.mark.parametrize("common", [
    ["optimizer=momentum", "norm=batch"],                       # SGD with momentum, batch norm's running stats
    ["optimizer=adam", "norm=none"],
    ["optimizer=nesterov", "norm=batch", "regularizer.l2=0.01", "trainer.grad_clip=0.5"],
    ["optimizer=adamw", "optimizer.weight_decay=0.1"],
    ["optimizer=rmsprop", "optimizer.momentum=0.5", "scheduler=cosine"],
    ["optimizer=adagrad", "scheduler=step", "scheduler.interval=step", "scheduler.step_size=7"],
], ids=["momentum-bn", "adam", "nesterov-bn-l2-clip", "adamw", "rmsprop-cosine", "adagrad-step"])
def test_a_fused_group_trains_each_member_as_its_own_run(fast_cfg, tmp_path, one_thread, float64, common):
    lrs = {"optimizer=adam": (1e-3, 3e-3), "optimizer=adamw": (1e-3, 3e-3), "optimizer=rmsprop": (1e-3, 3e-3),
           "optimizer=adagrad": (0.01, 0.03)}.get(common[0], (0.02, 0.05))
    variants = [[f"optimizer.lr={lr}", f"seed={seed}"] for lr in lrs for seed in (0, 1)]
    fused_trainers, plain_trainers = one_group_against_its_runs(fast_cfg, tmp_path, common, variants)
    # the members really differ from each other (different seeds and learning rates)
    w = [next(iter(t.model.state_dict().values())) for t in fused_trainers]
    assert all(not torch.equal(w[0], other) for other in w[1:])
    # each checkpoint holds the member's own ordinary state: its weights, its optimizer state
    for t in fused_trainers:
        last = load(t.out_dir / "checkpoints" / "last.pt")
        for name, value in t.model.state_dict().items():
            assert torch.equal(last["model"][name], value)
        assert last["optimizer"]["param_groups"][0]["lr"] == t.optimizer.param_groups[0]["lr"]
        assert last["step"] == 20


def test_the_optimizer_state_in_a_members_checkpoint_is_what_torch_holds(fast_cfg, tmp_path, one_thread, float64):
    variants = [["optimizer.lr=0.001", "seed=0"], ["optimizer.lr=0.002", "seed=1"]]
    plain_trainers, _ = ordinary(member_configs(fast_cfg, tmp_path, ["optimizer=adam"], variants, "plain"))
    fused_trainers, _ = fused(member_configs(fast_cfg, tmp_path, ["optimizer=adam"], variants, "fused"))
    for f, p in zip(fused_trainers, plain_trainers):
        sf = load(f.out_dir / "checkpoints" / "last.pt")["optimizer"]["state"]
        sp = load(p.out_dir / "checkpoints" / "last.pt")["optimizer"]["state"]
        assert sf.keys() == sp.keys()
        for k in sp:
            assert sf[k].keys() == sp[k].keys()
            assert float(sf[k]["step"]) == float(sp[k]["step"]) == 20
            assert relative_error(sf[k]["exp_avg_sq"], sp[k]["exp_avg_sq"]) < 1e-5


STOCHASTIC = "regularizer=[dropout,dropconnect,input_noise,weight_noise]"


@pytest.mark.parametrize("common", [
    ["optimizer=momentum", "norm=batch", STOCHASTIC],
    ["optimizer=adam", "norm=none", STOCHASTIC],
    ["model=resnet", "model.depth=1", "model.width=4", "optimizer=momentum", "norm=batch",
     "regularizer=[dropout,drop_path,input_noise,weight_noise]", "trainer.limit_val_batches=1"],
], ids=["momentum-bn-mlp", "adam-mlp", "momentum-bn-resnet-drop_path"])
def test_members_with_their_own_regularizer_strengths_draw_their_own_runs_masks_and_noise(
        fast_cfg, tmp_path, one_thread, float64, common):
    """Dropout, DropConnect, drop path, input noise and weight noise in one group of four, each member with its
    own seed, lr and strengths (one without weight noise): every member's masks and noise are its own run's
    (nn/noise.py: keys from the seed, counters per member), so its parameters after 20 steps are its run's."""
    resnet = "model=resnet" in common
    variants = []
    for k, (lr, seed, drop, other, noise_std, weight_std) in enumerate([
            (0.02, 0, 0.1, 0.3, 0.1, 0.0), (0.05, 1, 0.3, 0.1, 0.2, 0.01),
            (0.03, 2, 0.5, 0.2, 0.05, 0.02), (0.04, 3, 0.2, 0.4, 0.3, 0.005)]):
        if "optimizer=adam" in common:
            lr /= 20
        strength = f"regularizer.drop_path={other}" if resnet else f"regularizer.dropconnect={other}"
        variants.append([f"optimizer.lr={lr}", f"seed={seed}", f"regularizer.dropout={drop}", strength,
                         f"regularizer.input_noise={noise_std}", f"regularizer.weight_noise={weight_std}"])
    fused_trainers, plain_trainers = one_group_against_its_runs(fast_cfg, tmp_path, common, variants)
    for f, p in zip(fused_trainers, plain_trainers):  # the counters a resume continues from: its run's
        assert load(f.out_dir / "checkpoints" / "last.pt")["noise"] == load(p.out_dir / "checkpoints" / "last.pt")["noise"]


def test_the_same_seed_gives_the_same_masks_and_another_seed_others(fast_cfg, tmp_path, one_thread):
    """Two members with seed 0 and one with seed 1, all with dropout: the first two end equal (their keys are
    their seed's), the third differs; none of them equals a run without dropout."""
    trainers, results = fused(member_configs(fast_cfg, tmp_path, ["regularizer=dropout"],
                                             [["seed=0"], ["seed=0"], ["seed=1"]], "drop"))
    plain = ordinary([fast_cfg(*STEPS, "seed=0", output_dir=tmp_path / "nodrop")])[0][0]
    a, b, c = (dict(t.model.named_parameters()) for t in trainers)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])
    keys = [[int(m.key) for m in stochastic_modules(t.model).values()] for t in trainers]
    assert len(keys[0]) == 2 and keys[0] == keys[1] and all(x != y for x, y in zip(keys[0], keys[2]))
    assert not torch.equal(a["head.weight"], dict(plain.model.named_parameters())["head.weight"])
    assert all(r["status"] == "completed" for r in results), [r["final"]["val/acc"] for r in results]


def test_a_diverging_member_leaves_the_others_unchanged(fast_cfg, tmp_path, one_thread):
    common = ["optimizer=momentum", "trainer.log_every_n_steps=5"]
    good = [["optimizer.lr=0.02", "seed=0"], ["optimizer.lr=0.05", "seed=1"]]
    alone_trainers, alone_results = fused(member_configs(fast_cfg, tmp_path, common, good, "two"))
    with_bad = [good[0], ["optimizer.lr=1e6", "seed=2"], good[1]]
    trainers, results = fused(member_configs(fast_cfg, tmp_path, common, with_bad, "three"))
    assert results[1]["status"] == "diverged"
    assert results[1]["steps"] < 20                      # frozen at the flush that saw the non-finite loss
    assert read_metrics(trainers[1].out_dir)["status"] == "diverged"
    for k, j in ((0, 0), (2, 1)):
        assert results[k]["status"] == "completed" and results[k]["steps"] == 20
        assert results[k]["final"]["val/acc"] == pytest.approx(alone_results[j]["final"]["val/acc"], abs=1e-6)
        for name, value in alone_trainers[j].model.state_dict().items():
            assert relative_error(trainers[k].model.state_dict()[name], value) < 1e-6, name


def test_members_stop_on_their_own_epochs_and_early_stopping(fast_cfg, tmp_path, one_thread):
    common = ["trainer.limit_train_batches=5"]
    variants = [["trainer.max_epochs=1"], ["trainer.max_epochs=3"],
                ["trainer.max_epochs=3", "regularizer.early_stopping.patience=1", "optimizer.lr=3.0"]]
    cfgs = [fast_cfg(*common, "trainer.diagnostics_every_n_steps=0", *v, output_dir=tmp_path / f"m{k}")
            for k, v in enumerate(variants)]
    assert len(group_jobs(cfgs)[0]) == 1
    plain = [Trainer(fast_cfg(*common, "trainer.diagnostics_every_n_steps=0", *v, output_dir=tmp_path / f"p{k}")).fit()
             for k, v in enumerate(variants)]
    trainers, results = fused(cfgs)
    assert [r["epochs"] for r in results] == [r["epochs"] for r in plain]
    assert [r["status"] for r in results] == [r["status"] for r in plain]
    assert results[0]["epochs"] == 1 and results[1]["epochs"] == 3
    for k, t in enumerate(trainers):  # per step train/*, per epoch val/* and the rest, as in the plain run
        tags_f, tags_p = read_scalars(t.out_dir), read_scalars(tmp_path / f"p{k}")
        assert tags_f.keys() == tags_p.keys()
        assert [s for s, _ in tags_f["train/loss"]] == [s for s, _ in tags_p["train/loss"]]
        assert [s for s, _ in tags_f["val/acc"]] == [s for s, _ in tags_p["val/acc"]]
        log = (t.out_dir / "train.log").read_text()
        assert "diagnostics and the progress bar are off in fused mode" in log
        assert all(other.out_dir.name not in log for other in trainers if other is not t)  # only its own lines


def test_the_group_key_ignores_fusible_values_only(fast_cfg, tmp_path):
    base = fast_cfg(output_dir=tmp_path / "a")
    fusible = ["seed=3", "optimizer.lr=0.3", "optimizer.weight_decay=0.1", "regularizer.l2=0.01",
               "regularizer.label_smoothing=0.1", "trainer.max_epochs=5", "init=normal", "init.std=0.02"]
    assert structure(base) != structure(fast_cfg("init=normal", output_dir=tmp_path / "b"))  # init type defines it
    assert structure(fast_cfg("init=normal", output_dir=tmp_path / "c")) == structure(
        fast_cfg(*fusible, output_dir=tmp_path / "d"))
    for defining in ("model.width=64", "optimizer=adam", "norm=batch", "data.batch_size=32", "regularizer.dropout=0.1",
                     "regularizer.dropconnect=0.1", "regularizer.input_noise=0.1", "activation=tanh", "scheduler=cosine"):
        assert structure(base) != structure(fast_cfg(defining, output_dir=tmp_path / "e")), defining
    # a strength's value is fusible (the layer holds it in a buffer); whether the layer exists (> 0) is not
    strengths = [("regularizer.dropout=0.1", "regularizer.dropout=0.5"),
                 ("regularizer.dropconnect=0.2", "regularizer.dropconnect=0.3"),
                 ("regularizer.input_noise=0.1", "regularizer.input_noise=0.3"),
                 ("regularizer.weight_noise=0.01", "regularizer.weight_noise=0.0")]
    for one, other in strengths:
        assert structure(fast_cfg(one, output_dir=tmp_path / "s")) == structure(fast_cfg(other, output_dir=tmp_path / "t"))
    resnet = ("model=resnet", "model.depth=1", "model.width=4")
    assert structure(fast_cfg(*resnet, "regularizer.drop_path=0.1", output_dir=tmp_path / "r")) == structure(
        fast_cfg(*resnet, "regularizer.drop_path=0.3", output_dir=tmp_path / "s"))
    assert structure(fast_cfg(*resnet, "regularizer.drop_path=0.1", output_dir=tmp_path / "r")) != structure(
        fast_cfg(*resnet, output_dir=tmp_path / "s"))
    assert "L-BFGS" in (unfusible_reason(fast_cfg("optimizer=lbfgs", output_dir=tmp_path / "f")) or "") or \
        "LBFGS" in unfusible_reason(fast_cfg("optimizer=lbfgs", output_dir=tmp_path / "f"))
    assert "Adadelta" in unfusible_reason(fast_cfg("optimizer=adadelta", output_dir=tmp_path / "g"))
    assert unfusible_reason(fast_cfg("trainer.precision=bf16", output_dir=tmp_path / "h"))


def test_a_fused_member_resumes_and_continues_as_its_own_run(fast_cfg, tmp_path, one_thread):
    """last.pt of a member holds its own optimizer state (the momentum buffers): `resume=<dir>` continues it
    where a straight run would be."""
    common = ["optimizer=momentum", "trainer.limit_train_batches=10", "trainer.diagnostics_every_n_steps=0",
              "logger=none"]
    straight = Trainer(fast_cfg(*common, "trainer.max_epochs=2", output_dir=tmp_path / "straight"))
    straight.fit()
    members = [fast_cfg(*common, "trainer.max_epochs=1", f"optimizer.lr={lr}", output_dir=tmp_path / f"m{k}")
               for k, lr in enumerate((0.05, 0.02))]
    fused(members)
    resumed = Trainer(fast_cfg(*common, "trainer.max_epochs=2", f"resume={tmp_path / 'm0'}",
                               output_dir=tmp_path / "m0"))
    result = resumed.fit()
    assert result["status"] == "completed" and result["epochs"] == 2 and result["steps"] == 20
    for name, value in straight.model.state_dict().items():
        if value.is_floating_point():
            assert relative_error(resumed.model.state_dict()[name], value) < 1e-5, name


def test_members_with_their_own_schedule_numbers_follow_their_own_curves(fast_cfg, tmp_path, one_thread, float64):
    """A schedule's numbers are fusible: each member's own scheduler sets its own lr, per step and per epoch."""
    common = ["optimizer=momentum", "trainer.limit_train_batches=5", "trainer.max_epochs=3",
              "trainer.diagnostics_every_n_steps=0", "logger=none"]
    variants = [["scheduler=multistep", "scheduler.milestones=[1]", "scheduler.gamma=0.5", "seed=0"],
                ["scheduler=multistep", "scheduler.milestones=[2]", "scheduler.gamma=0.1", "seed=1"]]
    plain_cfgs = [fast_cfg(*common, *v, output_dir=tmp_path / f"p{k}") for k, v in enumerate(variants)]
    fused_cfgs = [fast_cfg(*common, *v, output_dir=tmp_path / f"f{k}") for k, v in enumerate(variants)]
    assert len(group_jobs(fused_cfgs)[0]) == 1
    plain_trainers, plain_results = ordinary(plain_cfgs)
    fused_trainers, fused_results = fused(fused_cfgs)
    for k, (f, p) in enumerate(zip(fused_trainers, plain_trainers)):
        assert read_scalars(f.out_dir)["lr"] == read_scalars(p.out_dir)["lr"]
        for name, value in p.model.state_dict().items():
            if value.is_floating_point():
                assert relative_error(f.model.state_dict()[name], value) < 1e-5, name
    lrs = [[v for _, v in read_scalars(t.out_dir)["lr"]] for t in fused_trainers]
    assert lrs[0][-1] == pytest.approx(0.025) and lrs[1][-1] == pytest.approx(0.005)


@pytest.mark.parametrize("kwargs, words", [({"cpu": "always"}, ["hydra.launcher.cpu", "probe", "fuse", "never"]),
                                           ({"cpu_fallback": "threads"}, ["cpu_fallback", "parallel", "sequential"]),
                                           ({"max_members": 0}, ["max_members", "≥ 1"]),
                                           ({"memory_fraction": 1.5}, ["memory_fraction", "(0, 1]"])])
def test_the_launchers_keys_are_checked_with_the_valid_choices(kwargs, words):
    from hydra_plugins.dltrain_fused.fused_launcher import FusedLauncher

    with pytest.raises(ValueError) as e:
        FusedLauncher(**kwargs)
    assert all(w in str(e.value) for w in words)


def test_a_chunk_holds_what_fits_and_at_most_max_members(fast_cfg, tmp_path, monkeypatch):
    from dltrain.fused import capacity

    cfg, cpu = fast_cfg(output_dir=tmp_path / "a"), torch.device("cpu")
    per = capacity.member_mb(cfg, cpu)
    monkeypatch.setattr(capacity, "available_mb", lambda device: 10 * per)
    assert capacity.chunk_size(cfg, 64, cpu, 1.0, None)[0] == 10     # the memory estimate × members fits
    assert capacity.chunk_size(cfg, 64, cpu, 0.5, None)[0] == 5      # memory_fraction
    assert capacity.chunk_size(cfg, 64, cpu, 1.0, 3)[0] == 3         # hydra.launcher.max_members
    assert capacity.chunk_size(cfg, 4, cpu, 1.0, None)[0] == 4       # never more than the group
    assert capacity.chunk_size(cfg, 4, cpu, 0.01, None)[0] == 1      # at least one


def test_a_members_test_numbers_are_those_of_its_best_weights_as_in_its_own_run(fast_cfg, tmp_path, one_thread,
                                                                              float64):
    # lr high enough that validation accuracy wobbles: some member's best epoch is not its last, so its test/*
    # must come from that epoch's weights (trainer.test_checkpoint=best), not from the group's final pass
    common = ["optimizer=momentum", "trainer.max_epochs=4", "trainer.limit_train_batches=6", "optimizer.lr=0.8",
              "trainer.diagnostics_every_n_steps=0", "logger=none"]
    variants = [[f"seed={seed}"] for seed in range(4)]
    cfgs = {tag: [fast_cfg(*common, *v, output_dir=tmp_path / tag / f"m{k}") for k, v in enumerate(variants)]
            for tag in ("plain", "fused")}
    _, plain = ordinary(cfgs["plain"])
    _, fused_results = fused(cfgs["fused"])
    assert any(r["best"]["epoch"] < r["epochs"] for r in plain), [r["best"]["epoch"] for r in plain]
    for f, p in zip(fused_results, plain):
        assert f["test_checkpoint"] == p["test_checkpoint"] == "best"
        assert f["best"]["epoch"] == p["best"]["epoch"]
        assert abs(f["test"]["test/loss"] - p["test"]["test/loss"]) < 1e-6
        assert f["test"]["test/acc"] == p["test"]["test/acc"]
