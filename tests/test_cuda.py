"""What only a GPU can show: resident uint8 data on the device, no host sync per step, mixed precision,
channels_last / compile against the plain run, DataParallel over two GPUs, the peak-memory figure and DDP over NCCL.
Skipped where there is no CUDA device (CI); run on a GPU machine with `pytest tests/test_cuda.py`."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from dltrain import Trainer, compose_config
from tests.conftest import ROOT, free_port, read_metrics
from tests.test_devices import train_losses

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

GPU = ["data=synthetic", "trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.accelerator=cuda"]
CNN = ["model=cnn", "model.channels=[8,16]", "model.hidden=32"]


def losses(overrides, out_dir) -> list[float]:
    return train_losses(compose_config([*GPU, "trainer.max_epochs=1", "trainer.limit_train_batches=8", *overrides],
                                       output_dir=out_dir))


def ready(overrides, out_dir) -> Trainer:
    trainer = Trainer(compose_config([*GPU, *overrides], output_dir=out_dir), callbacks=[])
    trainer.setup()
    return trainer


def test_resident_data_stays_uint8_on_the_gpu_and_batches_arrive_there_as_float(tmp_path):
    trainer = ready([], tmp_path)
    loader = trainer.data.train
    assert loader.resident and loader.x.dtype == torch.uint8 and loader.x.device.type == "cuda"
    x, y = next(iter(loader))
    assert x.device.type == y.device.type == "cuda" and x.dtype == torch.float32


def test_not_resident_data_stays_on_the_host_and_is_copied_from_pinned_memory(tmp_path):
    trainer = ready(["data.resident=false"], tmp_path)
    loader = trainer.data.train
    assert not loader.resident and loader.x.device.type == "cpu" and loader.pin
    x, _ = next(iter(loader))
    assert x.device.type == "cuda"


def host_syncs(trainer: Trainer, steps: int) -> int:
    """How many host-device synchronisations a training epoch of `steps` steps makes."""
    trainer.train_batches, trainer.state.batch = steps, 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_epoch()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("extra", [[], ["trainer.precision=bf16", "augment=[crop,flip]", "optimizer=adam",
                                        "scheduler=onecycle", "regularizer=l2"]])
def test_a_training_step_does_not_wait_for_the_gpu(tmp_path, extra):
    """Per-step numbers stay on the device until the flush, so a longer epoch makes no more host syncs:
    whatever syncs there are (the epoch's permutation, the flush) are per epoch, not per step."""
    trainer = ready(["trainer.log_every_n_steps=1000", "trainer.diagnostics_every_n_steps=0", *extra], tmp_path)
    host_syncs(trainer, 4)  # first-step costs (optimizer state, autocast caches) out of the count
    short, long = host_syncs(trainer, 8), host_syncs(trainer, 24)
    assert short == long, f"{short} syncs in 8 steps, {long} in 24: something syncs every step"
    assert long <= 8


def test_bf16_and_fp16_on_the_gpu_track_fp32(tmp_path):
    common = ["optimizer=adam"]
    fp32 = losses(common, tmp_path / "fp32")
    for precision in ("bf16", "16"):
        mixed = losses([*common, f"trainer.precision={precision}"], tmp_path / precision)
        assert mixed != fp32  # autocast really changed the arithmetic
        assert sum(mixed[-3:]) == pytest.approx(sum(fp32[-3:]), rel=0.05), precision


def test_fp16_scales_the_loss_with_a_grad_scaler(tmp_path):
    trainer = Trainer(compose_config([*GPU, "trainer.precision=16", "trainer.max_epochs=1",
                                      "trainer.limit_train_batches=4"], output_dir=tmp_path), callbacks=[])
    result = trainer.fit()
    assert result["status"] == "completed" and result["steps"] == 4
    assert trainer.scaler is not None and trainer.scaler.is_enabled() and trainer.scaler.get_scale() > 1


def test_channels_last_and_compile_give_the_plain_losses(tmp_path):
    plain = losses(CNN, tmp_path / "plain")
    # cuDNN picks other kernels (and TF32 convolutions) per layout: close, not equal
    assert losses([*CNN, "trainer.channels_last=true"], tmp_path / "nhwc") == pytest.approx(plain, rel=1e-2)
    assert losses([*CNN, "trainer.compile=true"], tmp_path / "compiled") == pytest.approx(plain, rel=1e-2)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DataParallel splits a batch only over two or more GPUs")
def test_data_parallel_splits_each_batch_over_the_gpus_and_gives_the_plain_losses(tmp_path):
    """With one GPU (or on the CPU) DataParallel just calls its module, so only two GPUs show what it does: each
    replica runs half of the batch on its own device, and the gathered result is the plain run's."""
    trainer = Trainer(compose_config([*GPU, *CNN, "trainer.strategy=dp", "trainer.devices=2", "data.batch_size=64"],
                                     output_dir=tmp_path / "split"), callbacks=[])
    trainer.setup()
    seen = []
    trainer.model.head.register_forward_hook(lambda m, args, out: seen.append((len(args[0]), args[0].device.index)))
    trainer.optimizer_step([next(iter(trainer.data.train))])
    assert sorted(seen) == [(32, 0), (32, 1)]
    plain = losses([*CNN, "data.batch_size=64"], tmp_path / "plain")
    dp = losses([*CNN, "data.batch_size=64", "trainer.strategy=dp", "trainer.devices=2"], tmp_path / "dp")
    assert dp == pytest.approx(plain, rel=1e-3)  # other batch shapes per GPU: other kernels, not the same bits


def test_peak_memory_is_logged_and_the_estimate_is_its_order_of_magnitude(tmp_path):
    trainer = Trainer(compose_config([*GPU, *CNN, "trainer.max_epochs=1"], output_dir=tmp_path))
    trainer.fit()
    peak = read_metrics(tmp_path)["final"]["memory/peak_mb"]
    estimate = trainer.memory_estimate["total"]
    # the peak also holds the resident data set and cuDNN workspaces, which the course's estimate leaves out
    assert 0 < estimate < peak
    data_mb = sum(t.numel() * t.element_size() for t in (trainer.data.train.x, trainer.data.val.x,
                                                           trainer.data.test.x)) / 2**20
    assert peak < 50 * (estimate + data_mb)


def test_ddp_over_nccl_on_one_gpu_trains_and_writes_the_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}"]
    proc = subprocess.run([*torchrun, str(ROOT / "train.py"), *GPU, "trainer.strategy=ddp", "trainer.max_epochs=1",
                           "trainer.limit_train_batches=10"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "runs").iterdir()
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["steps"] == 10
    assert metrics["final"]["memory/peak_mb"] > 0
