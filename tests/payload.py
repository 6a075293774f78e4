"""A stand-in for malicious code in a crafted run directory (tests/test_trust.py): instantiating it, with any
arguments, writes the file $DLTRAIN_TEST_MARKER. The tests check that it never appears."""
from __future__ import annotations

import os
from pathlib import Path


def touch_marker(*args, **kwargs):
    Path(os.environ["DLTRAIN_TEST_MARKER"]).write_text("the payload ran")
    raise RuntimeError("payload")


class Marker:
    def __init__(self, *args, **kwargs):
        touch_marker()
