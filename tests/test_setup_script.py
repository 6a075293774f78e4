"""scripts/setup.sh's data-set decision, with a fake apt-get and id on PATH and a stand-in for /usr/share/datasets:
apt waits for the dpkg lock; when the data set can neither be installed nor downloaded, set-up fails with the
commands that fix it instead of promising a download that cannot happen."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FAKE_APT = """#!/usr/bin/env bash
echo "$@" >> "$FAKE_LOG"
if [ "$FAKE_APT" = works ] && [ "${*: -1}" = dataset-fashion-mnist ]; then mkdir -p "$DLTRAIN_SYSTEM_DATASETS/fashion-mnist"; fi
[ "$FAKE_APT" = works ] || { echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2; exit 100; }
"""


@pytest.fixture
def repo(tmp_path):
    """A checkout with scripts/setup.sh whose .venv is already installed (the stamp matches pyproject.toml)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (tmp_path / ".venv" / ".dltrain-installed").write_text(
        hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest() + "\n")
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT)
    (bin_dir / "id").write_text('#!/usr/bin/env bash\necho "$FAKE_UID"\n')
    for tool in ("apt-get", "id"):
        os.chmod(bin_dir / tool, 0o755)
    return tmp_path


def setup(repo: Path, apt: str, url: str, uid: int = 0) -> tuple[subprocess.CompletedProcess, str]:
    log = repo / "apt.log"
    env = {**os.environ, "PATH": f"{repo / 'fakebin'}:{os.environ['PATH']}", "FAKE_APT": apt, "FAKE_UID": str(uid),
           "FAKE_LOG": str(log), "DLTRAIN_SYSTEM_DATASETS": str(repo / "system"), "DLTRAIN_DATA_URL": url}
    env.pop("DLTRAIN_SKIP_DATA", None)
    proc = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    return proc, log.read_text() if log.exists() else ""


NO_NETWORK = "http://127.0.0.1:9/train-images-idx3-ubyte.gz"   # the discard port: connection refused at once


def test_apt_installs_it_waiting_for_the_dpkg_lock(repo):
    proc, calls = setup(repo, "works", NO_NETWORK)
    assert proc.returncode == 0, proc.stderr
    assert (repo / "system" / "fashion-mnist").is_dir()
    lines = calls.splitlines()
    assert lines and all(line.startswith("-o DPkg::Lock::Timeout=120 ") for line in lines), calls
    assert "install -y -qq dataset-fashion-mnist" in calls


def test_neither_apt_nor_a_download_fails_with_the_commands_that_fix_it(repo):
    proc, calls = setup(repo, "locked", NO_NETWORK)
    assert proc.returncode == 1
    assert "cannot be downloaded" in proc.stderr
    assert "sudo apt-get -o DPkg::Lock::Timeout=120 install dataset-fashion-mnist" in proc.stderr
    assert "data/fashion_mnist/" in proc.stderr and "DLTRAIN_SKIP_DATA=1" in proc.stderr
    assert "first run" not in proc.stdout + proc.stderr
    assert calls.startswith("-o DPkg::Lock::Timeout=120 update")  # apt was tried first


def test_without_root_apt_is_not_tried_and_the_same_advice_is_given(repo):
    proc, calls = setup(repo, "works", NO_NETWORK, uid=1000)
    assert proc.returncode == 1 and calls == ""
    assert "sudo apt-get" in proc.stderr


def test_a_reachable_download_site_leaves_it_to_the_first_run(repo):
    site = repo / "site.gz"
    site.write_bytes(b"x")
    proc, _ = setup(repo, "locked", site.as_uri())
    assert proc.returncode == 0, proc.stderr
    assert "the first run downloads it into data/fashion_mnist" in proc.stdout


@pytest.mark.parametrize("where", ["system", "data/fashion_mnist", "data/fashion_mnist/FashionMNIST/raw"])
def test_data_already_there_needs_nothing(repo, where):
    target = repo / where
    if where == "system":
        (target / "fashion-mnist").mkdir(parents=True)
    else:
        target.mkdir(parents=True)
        (target / "train-images-idx3-ubyte.gz").write_bytes(b"")
    proc, calls = setup(repo, "locked", NO_NETWORK)
    assert proc.returncode == 0, proc.stderr
    assert calls == "" and proc.stderr == ""
