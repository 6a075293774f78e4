"""Run dltrain's CLI and SIGKILL it at one write boundary: `python tests/kill_at.py WHEN:FILE:N train args…`.

WHEN is `before` (the temporary file is written and fsynced, not yet renamed) or `after` (renamed); FILE is the
name the N-th rename of the run writes (`last.pt`, `best.pt`, `metrics.json`, …). SIGKILL leaves no chance to
clean up: what the run dir holds then is what any crash at that moment would leave."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main() -> None:
    when, name, n = sys.argv[1].split(":")
    assert when in ("before", "after"), when
    seen = 0
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        nonlocal seen
        hit = Path(dst).name == name and (seen := seen + 1) == int(n)
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace   # every writer of the run renames through os.replace (Path.replace calls it too)
    sys.argv = [str(Path(__file__).resolve().parents[1] / "train.py"), *sys.argv[2:]]
    from dltrain.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
