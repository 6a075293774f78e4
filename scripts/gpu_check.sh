#!/usr/bin/env bash
# The checks only a GPU can run, in one go: the CUDA tests, the speedrun over 5 seeds and the bench on the
# GPU (with every GPU figure: eager/compiled/bf16/channels_last speed-ups, the fused 16-job sweep's
# fused_speedup and fused_members_per_s, the 64-member sweep against 64 ordinary runs: fused_speedup_64).
# Each step has a time limit and its own log, and a failing step does not stop the next one.
#   bash scripts/gpu_check.sh [log dir]      (PYTHON=... to pick the interpreter; default python)
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${1:-outputs/gpu_check}
mkdir -p "$logs"
py=${PYTHON:-python}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv,noheader
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
status=0
step() {  # step NAME SECONDS COMMAND...: run it with a limit into $logs/NAME.log, show its tail
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    tail -n "${TAIL:-20}" "$logs/$name.log"
    [ "$rc" = 0 ] || status=1
}
step cuda_tests "${CUDA_TESTS_S:-180}" "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_augment.py tests/test_loader.py
rm -rf outputs/speedrun
step speedrun "${SPEEDRUN_S:-240}" "$py" train.py -m +experiment=speedrun seed=0,1,2,3,4 trainer.progress_bar=false \
    hydra.sweep.dir=outputs/speedrun
step time_to_accuracy 60 "$py" scripts/time_to_accuracy.py outputs/speedrun
TAIL=18 step bench "${BENCH_S:-420}" "$py" scripts/bench.py --quick
exit "$status"
