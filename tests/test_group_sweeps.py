"""For every config group, one multirun over all of its options (fast_dev_run, synthetic data) through the
real CLI: each option composes, validates, builds and trains. The option lists come from the files, so a
new option is swept without anyone editing this test."""
from __future__ import annotations

import json

import pytest

from tests.conftest import CONFIGS, run_cli

SMALL_RESNET = ["model=resnet", "model.depth=1", "model.width=8"]
# group → (options left out here and why, extra overrides the sweep needs)
SWEEPS = {
    "activation": ([], []),
    "init": ([], []),
    "norm": ([], SMALL_RESNET),                       # instance norm needs a conv model without a flat fc block
    "regularizer": (["drop_path"], []),               # drop_path: residual models only, swept below
    "augment": ([], []),
    "optimizer": ([], []),
    "loss": ([], []),
    "metrics": ([], []),
    "scheduler": ([], []),
    "model": ([], []),                                # each model's own defaults: they must all build
    "logger": ([], []),
    "trainer": (["gpu", "dp", "ddp"], []),            # CUDA / torchrun: tests/test_devices.py covers them on CPU
}


def options(group: str, leave_out) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if p.stem not in leave_out)


def sweep(tmp_path, group, opts, extra):
    args = ["-m", f"{group}={','.join(opts)}", "data=synthetic", "+debug=fast_dev_run", *extra]
    run_cli(args, cwd=tmp_path, timeout=600)
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").iterdir()
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}
    assert len(results) == len(opts), sorted(results)
    assert {name: r["status"] for name, r in results.items()} == {name: "completed" for name in results}


@pytest.mark.parametrize("group", sorted(SWEEPS))
def test_every_option_of_a_group_trains_in_one_multirun(group, tmp_path):
    leave_out, extra = SWEEPS[group]
    sweep(tmp_path, group, options(group, leave_out), extra)


def test_drop_path_trains_on_the_resnet(tmp_path):
    sweep(tmp_path, "regularizer", ["drop_path", "none"], SMALL_RESNET)
