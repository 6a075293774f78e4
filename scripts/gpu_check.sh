#!/usr/bin/env bash
# Every GPU figure in one command, for the first time a GPU is at hand:
#   bash scripts/gpu_check.sh            # full epochs (minutes)
#   bash scripts/gpu_check.sh --quick    # shortened epochs
# eager/compiled/bf16/channels_last speed-ups of the CNN, the fused 16-job sweep (fused_speedup,
# fused_members_per_s), the 64-member sweep against 64 ordinary runs (fused_speedup_64) and the fused eager
# sweep against sequential runs with trainer.compile=true (fused_over_compiled_sequential).
# Writes outputs/gpu_check/bench.json; exits 1 without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible; nothing measured" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" scripts/bench.py "$@" --out outputs/gpu_check \
    --only compile_speedup,bf16_speedup,channels_last_speedup,fused_speedup,fused_speedup_64
