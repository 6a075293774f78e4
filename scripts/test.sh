#!/usr/bin/env bash
# Runs the whole test suite; fails when a test fails or when no test was collected (pytest's exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
    echo "no tests were collected: that is a failure" >&2
    exit 1
fi
exit "$rc"
