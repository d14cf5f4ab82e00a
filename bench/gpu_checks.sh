#!/usr/bin/env bash
# Every check that needs a GPU, in one run (a lent GPU machine gives minutes, not hours):
#   bench/gpu_checks.sh OUT_DIR [CLIP]
# The CUDA tests, the classifier benchmark at batch 16 and 256, how many cameras the GPU
# classifier sustains, and how many 1080p streams the machine's CPU decodes (CLIP: an H.264
# 1080p 15 fps file, see bench/camera_cpu.py). OUT_DIR gets each step's stdout as
# NAME.out and everything else in log.txt. PYTHON picks the interpreter (default python3).
set -u
out=${1:?usage: bench/gpu_checks.sh OUT_DIR [CLIP]}
clip=${2:-}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$clip" ] || clip=$(cd "$(dirname "$clip")" && pwd)/$(basename "$clip")
cd "$(dirname "$0")/.."  # the bench and tests packages are imported from the repo root
log="$out/log.txt"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo "== $name: $*" | tee -a "$log"
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.out" 2>>"$log"
    rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
    tail -n 30 "$out/$name.out"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
step cuda-tests 120 "$py" -m pytest -m cuda -q -rs -p no:cacheprovider \
    tests/test_classifier.py tests/test_model.py
step bench-b16 90 "$py" -m camtrap.cli bench classifier --device cuda --json
step bench-b256 110 "$py" -m camtrap.cli bench classifier --device cuda --batch 256 --json
step find-cameras 130 "$py" -m camtrap.cli bench classifier --device cuda --find-cameras \
    --batch 64 --seconds 2 --start-cameras 32 --json
step camera-cpu 80 "$py" -m bench.camera_cpu ${clip:+--clip "$clip"} --procs 1 8 16 \
    --seconds 8 --json
