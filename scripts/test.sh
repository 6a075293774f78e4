#!/usr/bin/env bash
# Runs the whole test suite; fails when a test fails or when no test was collected (pytest's exit code 5).
# One pytest-xdist worker per core, whole files to a worker (a file's module-scoped fixtures are made once);
# `make test ARGS="-n 0"` runs it in one process.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -n auto --dist loadfile "$@"
rc=$?
if [ "$rc" = 5 ]; then
    echo "no tests were collected: that is a failure" >&2
    exit 1
fi
exit "$rc"
