"""trainer.profiler: torch.profiler over steps 2–6 (after a step of warm-up), written as a trace that
TensorBoard's profiler plugin and chrome://tracing open."""
from __future__ import annotations

import torch

from dltrain.callbacks.base import Callback


class Profiler(Callback):
    profiler = None

    def on_fit_start(self, trainer) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(
            activities=activities, schedule=torch.profiler.schedule(wait=1, warmup=1, active=4, repeat=1),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(str(trainer.out_dir / "profiler")),
            record_shapes=True)
        self.profiler.start()

    def on_train_step_end(self, trainer) -> None:
        self.profiler.step()

    def on_fit_end(self, trainer, result: dict) -> None:
        if self.profiler is not None:  # None when set-up failed before the fit started
            self.profiler.stop()
