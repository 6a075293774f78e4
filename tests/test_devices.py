"""Precision, memory layout, compile and the multi-process strategies, on the CPU (gloo for DDP)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dltrain import Trainer, compose_config
from dltrain.callbacks import Callback
from tests.conftest import FAST, ROOT, free_port, read_metrics


class Recorder(Callback):
    def __init__(self):
        self.losses = []

    def on_log(self, trainer, scalars, step):
        if "train/loss" in scalars:
            self.losses.append(scalars["train/loss"])


def train_losses(cfg) -> list[float]:
    rec = Recorder()
    Trainer(cfg, callbacks=[rec]).fit()
    return rec.losses


def test_bf16_autocast_on_cpu_tracks_fp32(fast_cfg, tmp_path):
    common = ("trainer.max_epochs=1", "optimizer=adam")
    fp32 = train_losses(fast_cfg(*common, output_dir=tmp_path / "a"))
    bf16 = train_losses(fast_cfg(*common, "trainer.precision=bf16", output_dir=tmp_path / "b"))
    assert fp32 != bf16  # autocast really changed the arithmetic
    assert abs(sum(fp32[-5:]) / 5 - sum(bf16[-5:]) / 5) < 0.05 * sum(fp32[-5:]) / 5


def test_fp16_backward_sees_the_scaled_loss_and_the_step_the_true_gradients(fast_cfg, tmp_path):
    """fp16 autocast with a GradScaler: the gradients backward produces are scale × the true ones (the loss was
    scaled), the optimizer steps with them unscaled (the fp32 run's gradients, to fp16's precision), and the
    run learns as the fp32 run does."""
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=16", "trainer.log_every_n_steps=1", "optimizer=adam")
    fp32 = Trainer(fast_cfg(*common, output_dir=tmp_path / "fp32"), callbacks=[])
    fp16 = Trainer(fast_cfg(*common, "trainer.precision=16", output_dir=tmp_path / "fp16"), callbacks=[])
    fp32.setup()
    fp16.setup()
    assert isinstance(fp16.scaler, torch.amp.GradScaler) and fp16.scaler.is_enabled() and fp32.scaler is None
    scale = fp16.scaler.get_scale()
    assert scale > 1
    raw = {}
    hooks = [p.register_hook(lambda g, name=name: raw.__setitem__(name, g.clone()))
             for name, p in fp16.model.named_parameters()]
    batch = next(iter(fp16.data.train))
    fp16.optimizer_step([batch])
    fp32.optimizer_step([batch])
    for h in hooks:
        h.remove()
    for (name, p), q in zip(fp16.model.named_parameters(), fp32.model.parameters(), strict=True):
        torch.testing.assert_close(raw[name], p.grad * scale, rtol=1e-6, atol=0)  # a power of two: exact
        assert (p.grad - q.grad).norm() < 1e-2 * q.grad.norm(), name
    losses16 = train_losses(fast_cfg(*common, "trainer.precision=16", output_dir=tmp_path / "run16"))
    losses32 = train_losses(fast_cfg(*common, output_dir=tmp_path / "run32"))
    assert len(losses16) == 16 and losses16 == pytest.approx(losses32, rel=1e-2)
    assert sum(losses16[-4:]) < sum(losses16[:4]) - 0.1  # it learns


def test_channels_last_matches_the_plain_run(tmp_path):
    common = ["data=synthetic", "model=cnn", "model.channels=[4,8]", "model.hidden=16", "trainer.max_epochs=1",
              "trainer.limit_train_batches=6"]
    plain = train_losses(compose_config(common, output_dir=tmp_path / "a"))
    nhwc = train_losses(compose_config([*common, "trainer.channels_last=true"], output_dir=tmp_path / "b"))
    assert nhwc == pytest.approx(plain, rel=1e-4)


def test_data_parallel_on_the_cpu_warns_and_runs_the_plain_module(fast_cfg, tmp_path, caplog):
    """On the CPU DataParallel only calls its module: what can be checked here is that the user is told, that
    the forward passes go through the wrapper around the trained model, and that the step is the plain one.
    Splitting a batch over GPUs needs two of them: tests/test_cuda.py."""
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=2")
    with caplog.at_level("WARNING", logger="dltrain"):
        dp = Trainer(fast_cfg(*common, "trainer.strategy=dp", output_dir=tmp_path / "dp"), callbacks=[])
        dp.setup()
    assert "trainer.strategy=dp on the CPU" in caplog.text
    assert isinstance(dp.net, torch.nn.DataParallel) and dp.net.module is dp.model and dp.model is not dp.net
    plain = Trainer(fast_cfg(*common, output_dir=tmp_path / "plain"), callbacks=[])
    plain.setup()
    assert not isinstance(plain.net, torch.nn.DataParallel)
    batch = next(iter(dp.data.train))
    calls = []
    handle = dp.net.register_forward_hook(lambda *args: calls.append(1))
    assert dp.optimizer_step([batch])[0] == plain.optimizer_step([batch])[0]
    handle.remove()
    assert calls == [1]
    for p, q in zip(dp.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_compile_gives_the_eager_losses(fast_cfg, tmp_path):
    common = ("trainer.max_epochs=1", "trainer.limit_train_batches=4")
    eager = train_losses(fast_cfg(*common, output_dir=tmp_path / "a"))
    compiled = train_losses(fast_cfg(*common, "trainer.compile=true", output_dir=tmp_path / "b"))
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_ddp_on_two_cpu_processes_equals_one_process_with_the_global_batch(tmp_path):
    """2 ranks × batch 32 must take the same steps as 1 process × batch 64: same samples per step (each rank
    takes every other index of the same permutation) and DDP averages the two gradients."""
    args = [*FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=10", "optimizer=momentum"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir(), single_dir.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = subprocess.run([*torchrun, str(ROOT / "train.py"), *args, "trainer.strategy=ddp",
                           "trainer.accelerator=cpu", "data.batch_size=32"],
                          cwd=ddp_dir, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "data.batch_size=64"],
                          cwd=single_dir, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    (ddp_run,) = (ddp_dir / "outputs" / "runs").iterdir()  # rank 1 wrote no run dir
    (single_run,) = (single_dir / "outputs" / "runs").iterdir()
    assert read_metrics(ddp_run)["steps"] == read_metrics(single_run)["steps"] == 10
    a = torch.load(ddp_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(single_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in b:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5)
    ddp_final, single_final = read_metrics(ddp_run)["final"], read_metrics(single_run)["final"]
    assert ddp_final["val/acc"] == pytest.approx(single_final["val/acc"])
    # the logged train numbers are the global batch's: all-reduced over the ranks, weighted by their samples
    assert ddp_final["train/loss"] == pytest.approx(single_final["train/loss"], abs=1e-5)
    assert ddp_final["train/acc"] == pytest.approx(single_final["train/acc"])


def test_ddp_without_torchrun_says_how_to_launch(fast_cfg, tmp_path, monkeypatch):
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    from dltrain import distributed

    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        distributed.setup("cpu")


def test_ddp_ranks_stop_together_when_only_one_receives_the_signal(tmp_path):
    """Rank 1 alone gets SIGTERM after step 3; both ranks stop at the next log flush (step 5) instead of
    rank 0 waiting forever in a collective that rank 1 left."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DLTRAIN_TEST_SIGNAL": "SIGTERM@3@1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    proc = subprocess.run([*torchrun, str(ROOT / "train.py"), *FAST, "trainer.strategy=ddp", "trainer.accelerator=cpu",
                           "trainer.log_every_n_steps=5", "data.batch_size=32"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode != 0
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = read_metrics(run)
    assert metrics["status"] == "interrupted" and metrics["steps"] == 5
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 5
