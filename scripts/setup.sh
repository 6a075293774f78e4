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

# The default data set, Fashion-MNIST: Debian's package where apt can install it (waiting for the dpkg lock
# while another apt runs), else a copy in data/fashion_mnist, else torchvision's download at the first run,
# but only where the download site answers; otherwise stop with the commands that fix it (README, "Data").
SYSTEM_DATASETS=${DLTRAIN_SYSTEM_DATASETS:-/usr/share/datasets}
DATA_URL=${DLTRAIN_DATA_URL:-http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz}
APT="apt-get -o DPkg::Lock::Timeout=120"
have_data() {
    [ -d "$SYSTEM_DATASETS/fashion-mnist" ] || [ -f data/fashion_mnist/train-images-idx3-ubyte.gz ] \
        || [ -f data/fashion_mnist/FashionMNIST/raw/train-images-idx3-ubyte.gz ]
}
can_download() {
    .venv/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10).close()" \
        "$DATA_URL" 2>/dev/null
}
if [ "${DLTRAIN_SKIP_DATA:-0}" != 1 ] && ! have_data; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "==> installing Fashion-MNIST ($APT install dataset-fashion-mnist)"
        { $APT update -qq && $APT install -y -qq dataset-fashion-mnist >/dev/null; } \
            || echo "    apt could not install dataset-fashion-mnist"
    fi
    if have_data; then
        :
    elif can_download; then
        echo "==> Fashion-MNIST is not installed; the first run downloads it into data/fashion_mnist"
    else
        cat >&2 <<MSG
setup: Fashion-MNIST is not installed and cannot be downloaded ($DATA_URL does not answer).
Get it with one of:
  sudo $APT update && sudo $APT install dataset-fashion-mnist    # puts it in $SYSTEM_DATASETS/fashion-mnist
  copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
    t10k-labels-idx1-ubyte.gz into data/fashion_mnist/
then run this again; or DLTRAIN_SKIP_DATA=1 $0 to set up without it (data=synthetic still works).
MSG
        exit 1
    fi
fi
