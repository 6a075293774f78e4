#!/usr/bin/env bash
# Creates .venv, installs dltrain with its test extra, and installs the default data set (Fashion-MNIST).
# Safe to run again: it skips what is already there. Used by `make train` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependency list changed since the last successful install.
stamp=.venv/.dltrain-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing dltrain and its dependencies into .venv (torch is large: a few minutes the first time)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$want" > "$stamp"
fi

# The default data set: Debian's package where apt can install it; otherwise the first training run
# downloads it into data/ through torchvision (see README, "Data").
if [ "${DLTRAIN_SKIP_DATA:-0}" != 1 ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "==> installing Fashion-MNIST (apt-get install dataset-fashion-mnist)"
        { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
            || echo "    apt could not install it; the first run will download it into data/ instead"
    else
        echo "==> Fashion-MNIST not in /usr/share/datasets; the first run downloads it into data/"
    fi
fi
