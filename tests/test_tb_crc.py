"""TensorBoard's record checksums computed in C (dltrain/tb_crc.py), and the sweep report's event reader
(report.read_curves) against TensorBoard's own EventAccumulator."""
from __future__ import annotations

import os
import time

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from dltrain import tb_crc
from dltrain.analysis import report
from tests.conftest import read_scalars


def test_masked_crc32c_equals_tensorboards_python_loop():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c, u32

    def tensorboards(data):  # pywrap_tensorflow.masked_crc32c, which install() replaces
        x = u32(crc32c(data))
        return u32(((x >> 15) | u32(x << 17)) + 0xA282EAD8)

    for size in (0, 1, 8, 12, 63, 64, 1000, 4099):
        data = os.urandom(size)
        assert tb_crc.masked_crc32c(data) == tensorboards(data), size


def test_install_routes_the_writer_and_the_reader_to_it():
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer

    assert tb_crc.install()
    assert record_writer.masked_crc32c is tb_crc.masked_crc32c
    assert pywrap_tensorflow.masked_crc32c is tb_crc.masked_crc32c


def write(run_dir, steps, purge_step=None, tag="train/loss"):
    writer = SummaryWriter(str(run_dir), purge_step=purge_step)
    for step in steps:
        writer.add_scalar(tag, step / 10, step)
        writer.add_histogram("diag/w", torch.tensor([0.1 * step, 0.2, 0.3]), step)  # tags the reader must skip
    writer.close()
    time.sleep(1.1)  # event file names carry the second they were opened in


def test_read_curves_equals_eventaccumulator_across_a_restart(tmp_path):
    """A run that logged steps 1-10, then resumed from step 5 (purge_step 6) and logged 6-8: steps 9 and 10 of
    the first writer are orphans and must go, as TensorBoard drops them."""
    tb_crc.install()
    write(tmp_path, range(1, 11))
    write(tmp_path, range(6, 9), purge_step=6)
    write(tmp_path, [1, 2], tag="val/acc")  # another tag, another step axis: untouched by the purge
    ours = report.read_curves(tmp_path, tags=("train/loss", "val/acc"))
    expected = [(s, pytest.approx(s / 10)) for s in range(1, 9)]
    assert ours["train/loss"] == expected
    assert ours["val/acc"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2))]
    theirs = read_scalars(tmp_path)  # EventAccumulator: also proves the C checksums are valid records
    assert [(s, pytest.approx(v)) for s, v in theirs["train/loss"]] == ours["train/loss"]


def test_read_curves_drops_orphans_after_a_restart_that_logged_nothing_yet(tmp_path):
    """Resumed at step 3 (purge_step 4) and stopped again before logging: steps 4-10 are orphans all the same."""
    write(tmp_path, range(1, 11))
    write(tmp_path, [], purge_step=4)
    assert [s for s, _ in report.read_curves(tmp_path)["train/loss"]] == [1, 2, 3]
    assert [s for s, _ in read_scalars(tmp_path)["train/loss"]] == [1, 2, 3]
