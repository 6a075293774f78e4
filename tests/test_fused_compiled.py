"""The compiled fused step (trainer.compile=true, dltrain/fused/compiled.py) against the eager fused step and
the members' own runs: the same parameters and batch-norm statistics after two epochs, no batch dropped (an
epoch's shorter last batch runs eagerly), one graph without a break, and no recompilation when a per-step
schedule changes the rates or a member ends. One compilation on the CPU (inductor, ~20-60 s on 2 cores)."""
from __future__ import annotations

import pytest
import torch

from dltrain.fused.group import FusedGroup
from dltrain.fused.grouping import group_jobs, unfusible_reason
from dltrain.trainer import Trainer
from tests.test_fused import float64, ordinary, relative_error  # noqa: F401 - float64 is a fixture

# 344 training samples (600 less the 256 of validation) in batches of 64: 5 full batches and one of 24 an epoch.
# Adam (its step count in the bias corrections) and batch norm (state and buffers the graph updates in place),
# a per-step cosine schedule (the rates change at every step), members of 1 and 2 epochs (one ends while the
# others go on).
COMMON = ["data.train_size=600", "optimizer=adam", "norm=batch", "scheduler=cosine", "scheduler.interval=step",
          "regularizer.l2=0.001", "trainer.grad_clip=1.0", "trainer.diagnostics_every_n_steps=0", "logger=none",
          "trainer.test_checkpoint=last"]
VARIANTS = [["optimizer.lr=0.001", "seed=0", "trainer.max_epochs=1"],
            ["optimizer.lr=0.003", "seed=1", "trainer.max_epochs=2"],
            ["optimizer.lr=0.002", "seed=2", "trainer.max_epochs=2"]]


def configs(fast_cfg, tmp_path, tag, *extra):
    return [fast_cfg(*COMMON, *extra, *v, output_dir=tmp_path / tag / f"m{k}") for k, v in enumerate(VARIANTS)]


def fused_group(cfgs):
    trainers = [Trainer(cfg) for cfg in cfgs]
    group = FusedGroup(trainers)
    return group, trainers, group.fit()


def assert_same_weights(trainers, references, tol):
    for t, r in zip(trainers, references):
        mine = t.model.state_dict()
        for name, value in r.model.state_dict().items():
            if value.is_floating_point():
                assert relative_error(mine[name], value) < tol, (t.out_dir.name, name, relative_error(mine[name], value))
            else:
                assert torch.equal(mine[name], value), name  # num_batches_tracked


def test_the_compiled_fused_step_trains_as_the_eager_one(fast_cfg, tmp_path, one_thread, float64):  # noqa: F811 - the fixture imported above
    from torch._dynamo.utils import counters

    plain, plain_results = ordinary(configs(fast_cfg, tmp_path, "plain"))
    _, eager, eager_results = fused_group(configs(fast_cfg, tmp_path, "eager"))
    torch._dynamo.reset()
    counters.clear()
    group, compiled, compiled_results = fused_group(configs(fast_cfg, tmp_path, "compiled", "trainer.compile=true"))
    # no batch dropped: every member took the steps of its own run, the short last batches included
    assert [r["steps"] for r in compiled_results] == [r["steps"] for r in plain_results] == [6, 12, 12]
    assert all(r["status"] == "completed" for r in compiled_results)
    # the first step (it creates the moments) and each epoch's short batch ran eagerly, the rest compiled
    assert group.compiled.steps == {"eager": 3, "compiled": 9}
    # one frame, one graph, no break; neither the per-step rates nor member 0's end recompiled it
    assert counters["frames"]["total"] == counters["frames"]["ok"] == 1, dict(counters["frames"])
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert_same_weights(compiled, eager, 1e-9)       # float64: the same arithmetic, reordered at most
    assert_same_weights(compiled, plain, 1e-5)       # each member as its own (eager) run
    for c, e in zip(compiled_results, eager_results):
        assert c["final"]["val/acc"] == pytest.approx(e["final"]["val/acc"], abs=1e-9)
    assert "the group's step is compiled (torch.compile mode=default" in (compiled[1].out_dir / "train.log").read_text()


def test_compiled_jobs_are_fused_unless_their_step_has_weight_noise(fast_cfg, tmp_path):
    cfgs = [fast_cfg("trainer.compile=true", f"seed={s}", output_dir=tmp_path / f"m{s}") for s in range(2)]
    assert group_jobs(cfgs) == ([[0, 1]], {})
    noisy = fast_cfg("trainer.compile=true", "regularizer.weight_noise=0.01", output_dir=tmp_path / "n")
    assert "weight_noise" in unfusible_reason(noisy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (scripts/gpu_check.sh runs this)")
def test_on_a_gpu_the_compiled_fused_step_replays_a_cuda_graph(fast_cfg, tmp_path):
    from torch._dynamo.utils import counters

    cuda = ["trainer.accelerator=cuda", "trainer.devices=1"]
    _, eager, _ = fused_group(configs(fast_cfg, tmp_path, "eager", *cuda))
    torch._dynamo.reset()
    counters.clear()
    group, compiled, results = fused_group(configs(fast_cfg, tmp_path, "compiled", *cuda, "trainer.compile=true"))
    assert group.compiled.mode == "reduce-overhead"
    assert [r["steps"] for r in results] == [6, 12, 12] and group.compiled.steps == {"eager": 3, "compiled": 9}
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])  # really replayed as a graph
    assert_same_weights(compiled, eager, 1e-4)  # float32 on the GPU
