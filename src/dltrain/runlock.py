"""One writer per run directory: an exclusive `fcntl.flock` on `<run dir>/.lock`, held while a process writes
the run.

The kernel drops the lock when the process ends, however it ends (SIGKILL included), so a lock is never
stale and nothing has to clean it up; the empty file itself stays. The process that holds it writes its pid
into it, for the message a second process prints. The CLI takes the lock before anything is written into the
directory (a single run's and a resumed run's: before Hydra starts; a sweep's job: first thing in the job), so
two processes started at once with the same `hydra.run.dir` or `resume=` cannot both write into it.

`running(run_dir)` tells a reader (the end-of-sweep lines) whether a live process holds the lock: it takes a
shared lock for a moment, so `acquire` retries for a short GRACE before it calls the directory taken.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from dltrain.errors import WriteFailed

NAME = ".lock"
GRACE_S = 0.5   # how long `acquire` waits out a reader's momentary shared lock (a writer holds it for the run)

_held: dict[Path, int] = {}   # run dir (resolved) → the fd whose open file description holds the lock


class RunLocked(RuntimeError):
    """Another live process holds this run directory's lock."""

    def __init__(self, run_dir: Path, pid: str | None, given: str | None = None):
        self.run_dir, self.pid = run_dir, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{given or run_dir}: {who} is writing into {run_dir} (it holds {NAME} there); a second "
                         f"process never writes into the same run directory")


def _key(run_dir: str | Path) -> Path:
    return Path(run_dir).expanduser().resolve()


def holds(run_dir: str | Path) -> bool:
    """Whether this process holds the lock of `run_dir`."""
    return _key(run_dir) in _held


def acquire(run_dir: str | Path) -> bool:
    """Take the lock of `run_dir` (creating the directory), or raise RunLocked. Returns False when this
    process holds it already (the caller then must not release it), True when this call took it."""
    key = _key(run_dir)
    if key in _held:
        return False
    try:
        key.mkdir(parents=True, exist_ok=True)
        fd = os.open(key / NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:  # a full disk, a read-only place: one line naming the file, like every failed write
        raise WriteFailed(key / NAME, e) from e
    deadline = time.monotonic() + GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                pid = _read_pid(fd)
                os.close(fd)
                raise RunLocked(key, pid) from None
            time.sleep(0.02)
    try:  # the pid, for the message of a process that finds the directory taken
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # a full disk: the lock holds all the same, only the message loses the pid
        pass
    _held[key] = fd
    return True


def release(run_dir: str | Path) -> None:
    fd = _held.pop(_key(run_dir), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor of the open file description drops the lock


def release_all() -> None:
    for run_dir in list(_held):
        release(run_dir)


def running(run_dir: str | Path) -> str | None:
    """The pid (or "?") of the live process that holds the lock of `run_dir`, None when nobody does."""
    key = _key(run_dir)
    if key in _held:
        return str(os.getpid())
    try:
        fd = os.open(key / NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file: never locked (or not a dltrain run)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_pid(fd) or "?"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> str | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None
