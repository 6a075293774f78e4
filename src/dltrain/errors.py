"""dltrain's own exceptions, at the bottom of the import graph so that every layer can raise them: a config
that must not start a run, a data file that cannot be read, and the ways a run ends other than by finishing."""
from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A config that must not start a run; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


class DataError(RuntimeError):
    """A data file that is missing or unreadable; the message names the file and what is wrong."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: a result (status `diverged`), not a crash."""


class Pruned(RuntimeError):
    """The Optuna trial this run is told it to stop (hydra.sweeper.pruner): a result (status `pruned`), not a crash."""


class Interrupted(Exception):
    """A stop signal (SIGTERM, SIGINT, SIGUSR1) arrived; the step in flight was finished and last.pt written.

    Not a KeyboardInterrupt on purpose: it is an orderly, resumable stop, and `except Exception` handlers
    up the stack may look at it (the CLI turns it into the exit code 128 + signal number)."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class WriteFailed(OSError):
    """A file of the run could not be written (a full disk, an I/O error); names the file. The temporary file
    is gone and the previous version of the file, if any, is untouched."""

    def __init__(self, path, cause: BaseException):
        # torch.save's writer reports "unexpected pos …"; the OSError it met (ENOSPC) is its __context__
        error, seen = cause, set()
        while error is not None and id(error) not in seen and not getattr(error, "strerror", None):
            seen.add(id(error))
            error = error.__cause__ or error.__context__
        error = error or cause
        reason = getattr(error, "strerror", None) or " ".join(str(cause).split()) or type(cause).__name__
        super().__init__(getattr(error, "errno", None), reason, str(path))
        self.path = str(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, for the console (the full text and the traceback go to train.log)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or "(no message)"
    if len(text) > limit:
        text = text[:limit].rstrip() + " …"
    return f"{type(exc).__name__}: {text}"
