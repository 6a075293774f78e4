#!/usr/bin/env bash
# The checks only a GPU can run, in one go: the CUDA tests (the compiled fused step's CUDA graph among them),
# the speedrun over 5 seeds and the bench on the GPU with every GPU figure: eager/compiled/bf16/channels_last
# speed-ups; the fused 16-job sweep eager (fused_speedup) and compiled (fused_compiled_speedup) over the
# sequential eager runs and over the sequential compiled ones (the compiled baseline); the compiled fused step
# over the eager one (fused_compiled_step); the 64-member sweep against 64 ordinary runs (fused_speedup_64).
# Each step has a time limit and its own log, and a failing step does not stop the next one.
#   bash scripts/gpu_check.sh [log dir]          (PYTHON=... to pick the interpreter; default python)
#   bash scripts/gpu_check.sh --cpu [log dir]    the parts a CPU can run: the compiled fused step's tests and
#                                                its bench figure (to check this script without a GPU)
#   bash scripts/gpu_check.sh --dry-run          print each step's command, run nothing
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
case "${1:-}" in
    --cpu) mode=cpu; shift ;;
    --dry-run) mode=dry; shift ;;
esac
logs=${1:-outputs/gpu_check}
mkdir -p "$logs"
py=${PYTHON:-python}
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME SECONDS COMMAND...: run it with a limit into $logs/NAME.log, show its tail
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    if [ "$mode" = dry ]; then
        echo "== $name (limit ${limit} s): $*"
        return
    fi
    timeout "$limit" "$@" >"$logs/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    tail -n "${TAIL:-20}" "$logs/$name.log"
    [ "$rc" = 0 ] || status=1
}
if [ "$mode" = cpu ]; then
    step fused_compiled_tests "${FUSED_TESTS_S:-600}" "$py" -m pytest -q -p no:cacheprovider tests/test_fused_compiled.py
    TAIL=8 step fused_compiled_step "${BENCH_S:-600}" "$py" scripts/bench.py --only fused_compiled_step \
        --out "$logs/bench"
    exit "$status"
fi
if [ "$mode" = gpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv,noheader
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
fi
step cuda_tests "${CUDA_TESTS_S:-240}" "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_augment.py tests/test_loader.py tests/test_fused_compiled.py
[ "$mode" = dry ] || rm -rf outputs/speedrun
step speedrun "${SPEEDRUN_S:-240}" "$py" train.py -m +experiment=speedrun seed=0,1,2,3,4 trainer.progress_bar=false \
    hydra.sweep.dir=outputs/speedrun
step time_to_accuracy 60 "$py" scripts/time_to_accuracy.py outputs/speedrun
TAIL=24 step bench "${BENCH_S:-600}" "$py" scripts/bench.py --quick --compiled-baseline
exit "$status"
