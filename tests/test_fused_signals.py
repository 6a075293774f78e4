"""Stop signals in fused mode, through the real CLI: SIGTERM during a fused sweep ends every unfinished member
as its own run would end (the step in flight finished, a mid-epoch checkpoints/last.pt with its optimizer
state, metrics.json `interrupted`), leaves the finished members untouched, and the sweep exits as an ordinary
sweep does on the signal; `resume=<member dir>` then completes the member as an ordinary run."""
from __future__ import annotations

import signal

import pytest
import torch

from dltrain.errors import Interrupted
from dltrain.fused.group import FusedGroup
from dltrain.trainer import Trainer
from tests.conftest import FAST, read_metrics, read_scalars, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# 10 steps an epoch; momentum, so that a last.pt without its optimizer state would not resume the same run
COMMON = [*(a for a in FAST if not a.startswith("trainer.max_epochs")), "optimizer=momentum",
          "trainer.limit_train_batches=10", "trainer.limit_val_batches=2", "trainer.diagnostics_every_n_steps=0"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


@pytest.mark.slow
def test_sigterm_in_a_fused_sweep_interrupts_each_unfinished_member_resumably(tmp_path):
    sweep = tmp_path / "outputs" / "sweep"
    # one group of four: two members of 1 epoch (done at step 10), two of 2 epochs (cut at step 15 = batch 5
    # of epoch 2: the test hook counts the group's steps)
    proc = run_cli(["-m", "+launcher=fused", "hydra.launcher.cpu=fuse", *COMMON, "trainer.max_epochs=1,2",
                    "seed=0,1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, check=False,
                   env={**ONE_THREAD, "DLTRAIN_TEST_SIGNAL": "SIGTERM@15"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 128 + 15, out
    assert "as one stacked model" in out and "Traceback" not in out
    assert "resume=auto hydra.sweep.dir=" in proc.stderr  # the ordinary sweep's line on how to continue
    jobs = {p: (p / ".hydra" / "overrides.yaml").read_text() for p in sweep.iterdir() if (p / ".hydra").is_dir()}
    done = [p for p, o in jobs.items() if "trainer.max_epochs=1" in o]
    cut = [p for p, o in jobs.items() if "trainer.max_epochs=2" in o]
    assert len(done) == len(cut) == 2
    for p in done:
        m = read_metrics(p)
        assert (m["status"], m["epochs"], m["steps"]) == ("completed", 1, 10)
    untouched = {f: f.stat().st_mtime_ns for p in done for f in p.rglob("*") if f.is_file()}
    for p in cut:
        m = read_metrics(p)
        assert (m["status"], m["epochs"], m["steps"]) == ("interrupted", 1, 15), p
        state = torch.load(p / "checkpoints" / "last.pt", weights_only=True)
        assert (state["epoch"], state["step"], state["batch"], state["status"]) == (1, 15, 5, "interrupted")
        buffers = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
        assert buffers and all(torch.isfinite(b).all() and b.abs().sum() > 0 for b in buffers)
        assert [s for s, _ in read_scalars(p)["train/loss"]] == list(range(1, 16))  # flushed before stopping
        assert "run interrupted: stopped by SIGTERM after step 15" in (p / "train.log").read_text()

    # the member continues as an ordinary run and ends where its uninterrupted ordinary run ends
    member = next(p for p in cut if "seed=1" in jobs[p])
    straight = tmp_path / "outputs" / "straight"
    run_cli([*COMMON, "trainer.max_epochs=2", "seed=1", f"hydra.run.dir={straight}"], cwd=tmp_path, env=ONE_THREAD)
    proc = run_cli([f"resume='{member}'"], cwd=tmp_path, env=ONE_THREAD)  # quoted: the job's name has = and ,
    assert "resumed from" in proc.stdout and "1 epochs, 15 steps done" in proc.stdout
    m, s = read_metrics(member), read_metrics(straight)
    assert (m["status"], m["epochs"], m["steps"]) == ("completed", 2, 20)
    assert [s for s, _ in read_scalars(member)["train/loss"]] == list(range(1, 21))  # no step twice
    resumed = torch.load(member / "checkpoints" / "last.pt", weights_only=True)["model"]
    reference = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name, value in reference.items():
        if value.is_floating_point():  # fused and ordinary steps differ by float32 rounding only
            assert relative_error(resumed[name], value) < 1e-4, name
    assert abs(m["final"]["val/acc"] - s["final"]["val/acc"]) < 1e-3
    assert {f: f.stat().st_mtime_ns for f in untouched} == untouched  # the finished members: not one file touched


def test_a_signal_during_validation_ends_the_members_after_their_epoch(fast_cfg, tmp_path, one_thread, monkeypatch):
    """As in an ordinary run (Trainer.end_epoch): the epoch is validated and checkpointed, then each member stops
    interrupted; the group's handlers are put back afterwards."""
    evaluate = FusedGroup.evaluate

    def signalled(self, loader, prefix, max_batches):
        if prefix == "val":
            signal.raise_signal(signal.SIGTERM)  # the group's handler only notes it
        return evaluate(self, loader, prefix, max_batches)

    monkeypatch.setattr(FusedGroup, "evaluate", signalled)
    before = signal.getsignal(signal.SIGTERM)
    trainers = [Trainer(fast_cfg("trainer.limit_train_batches=5", "trainer.diagnostics_every_n_steps=0", "logger=none",
                                 f"seed={seed}", output_dir=tmp_path / f"m{seed}")) for seed in range(2)]
    group = FusedGroup(trainers)
    with pytest.raises(Interrupted):
        group.fit()
    assert signal.getsignal(signal.SIGTERM) is before
    for t, result in zip(trainers, group.results):
        assert (result["status"], result["epochs"], result["steps"]) == ("interrupted", 1, 5)
        assert read_metrics(t.out_dir)["status"] == "interrupted"
        state = torch.load(t.out_dir / "checkpoints" / "last.pt", weights_only=True)
        assert (state["epoch"], state["step"], state["batch"]) == (1, 5, 0)  # the whole epoch, validated
        assert all(torch.equal(state["model"][k], v) for k, v in t.model.state_dict().items())
