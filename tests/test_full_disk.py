"""A full disk (or any failed write) ends the run with one console line naming the file it could not write:
no traceback (TensorBoard's writer thread included), status failed in metrics.json where it still fits, no
temporary file left, every checkpoint written before still loadable. Each writer gets an injected ENOSPC; a
real full filesystem (a 3 MB tmpfs, when the tests run as root) shows the same end to end."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import pytest
import torch

from tests.conftest import FAST, ROOT

ENOSPC = os.strerror(errno.ENOSPC)   # "No space left on device"


def full() -> OSError:
    return OSError(errno.ENOSPC, ENOSPC)


class Filling:
    """A file whose disk fills after `budget` more bytes: a write beyond that raises ENOSPC, as on a full disk."""

    def __init__(self, file, budget: int):
        self.file, self.left = file, budget

    def write(self, data):
        if len(data) > self.left:
            raise full()
        self.left -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def inject_checkpoint(monkeypatch, run):
    """The second last.pt (epoch 2's) meets a full disk half-way through torch.save."""
    import dltrain.checkpoint as ckpt

    real, seen = torch.save, []

    def save(obj, f, *args, **kwargs):
        if getattr(f, "name", "").endswith(".last.pt.tmp"):
            seen.append(f.name)
            if len(seen) == 2:  # what torch.save raises when its file meets a full disk (the OSError is its cause)
                f.write(b"x" * 1000)
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from full()
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save)
    return run / "checkpoints" / "last.pt"


def inject_csv(monkeypatch, run):
    import dltrain.callbacks.csvlog as csvlog

    monkeypatch.setattr(csvlog, "open", lambda *a, **k: Filling(open(*a, **k), 3000), raising=False)
    return run / "metrics.csv"


def inject_train_log(monkeypatch, run):
    from dltrain.callbacks.runlog import QuietFileHandler

    real = QuietFileHandler._open
    monkeypatch.setattr(QuietFileHandler, "_open", lambda self: Filling(real(self), 600))
    return run / "train.log"


def inject_tensorboard(monkeypatch, run):
    """The event file's writer thread meets the full disk (after a few records)."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    real, calls = RecordWriter.write, []

    def write(self, data):
        calls.append(1)
        if len(calls) > 20:
            raise full()
        return real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    return None  # named by the writer: events.out.tfevents.<time>.<host>…


def inject_metrics_json(monkeypatch, run):
    import dltrain.runinfo as runinfo

    def opener(path, *args, **kwargs):
        f = open(path, *args, **kwargs)
        return Filling(f, 0) if str(path).endswith(".metrics.json.tmp") else f

    monkeypatch.setattr(runinfo, "open", opener, raising=False)
    return run / "metrics.json"


@pytest.mark.parametrize("inject", [inject_checkpoint, inject_csv, inject_train_log, inject_tensorboard,
                                    inject_metrics_json], ids=lambda f: f.__name__[len("inject_"):])
def test_a_failed_write_in_any_writer_is_one_line_naming_the_file(inject, tmp_path, fast_cfg, one_thread,
                                                                    monkeypatch, capsys):
    from dltrain.cli.jobs import run_job

    run = tmp_path / "run"
    cfg = fast_cfg("trainer.max_epochs=3", output_dir=run)
    file = inject(monkeypatch, run)
    uncaught = []  # exceptions a thread let go (TensorBoard's writer): the default hook prints their traceback
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))
    with pytest.raises(SystemExit) as exit_:
        run_job(cfg, [], multirun=False)
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and uncaught == []
    (line,) = err.strip().splitlines()
    if file is None:
        file = next(run.glob("events.out.tfevents.*"))
    assert line == (f"dltrain: run failed: cannot write {file}: {ENOSPC}; the checkpoints written before "
                    f"are intact")
    monkeypatch.undo()
    assert sorted(p.name for p in run.rglob("*.tmp")) == []
    for path in (run / "checkpoints").glob("*.pt"):
        torch.load(path, weights_only=True)  # every earlier checkpoint loads
    if inject is inject_checkpoint:  # the previous last.pt is epoch 1's, whole
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    if inject is not inject_metrics_json:  # where metrics.json still fits, it says failed and why
        import json

        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "failed" and metrics["error"] == f"cannot write {file}: {ENOSPC}"


@pytest.fixture
def small_filesystem(tmp_path):
    """A 3 MB tmpfs (needs root and mount; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_run_on_a_filesystem_that_fills_up_ends_in_one_line(small_filesystem, tmp_path):
    # 269k parameters: ~1.1 MB a checkpoint; init.pt and epoch 1's last.pt fit, best.pt's temporary file does not
    run = small_filesystem / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *FAST, "model.width=256", "trainer.max_epochs=3",
                           f"hydra.run.dir={run}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    (tmp_path / "console.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"dltrain: run failed: cannot write {run}/") and f": {ENOSPC};" in line
    assert sorted(p.name for p in run.rglob("*.tmp")) == []
    checkpoints = sorted((run / "checkpoints").glob("*.pt"))
    assert checkpoints
    for path in checkpoints:
        torch.load(path, weights_only=True)
    if (run / "metrics.json").exists():
        import json

        assert json.loads((run / "metrics.json").read_text())["status"] == "failed"
