#!/usr/bin/env bash
# The GPU check in one call (bench/RESULTS-gpu.md says what it measured): install netdsl into this
# machine's Python (from wheels in .whl/ where it has no network), run the benchmark, then the tests
# that need CUDA. Usage: bash bench/gpu_run.sh OUTDIR   (248 s on an H200, run 1 of RESULTS-gpu.md)
set -uo pipefail
OUT=${1:-/tmp/netdsl-gpu}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
cd "$REPO"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl; fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
export PYTHONUNBUFFERED=1
cd /tmp  # not the repository root: there `import netdsl.cli` would miss the installed mapping of cli/
timeout "${BENCH_TIMEOUT:-420}" python3 "$REPO/bench/gpu_bench.py" --out "$OUT/RESULTS-gpu.md" --json "$OUT/gpu.json" \
    > "$OUT/gpu-bench.log" 2>&1
echo "benchmark exit $?"; tail -5 "$OUT/gpu-bench.log"
timeout "${MEMORY_TIMEOUT:-150}" python3 "$REPO/bench/memory_bench.py" --device cuda --out "$OUT/RESULTS-memory.md" \
    > "$OUT/memory-bench.log" 2>&1
echo "memory benchmark exit $?"; tail -3 "$OUT/memory-bench.log"
timeout "${TEST_TIMEOUT:-120}" python3 -m pytest -p no:cacheprovider -q -p no:warnings --rootdir "$REPO" \
    "$REPO/tests/test_compile.py" "$REPO/tests/test_lowering.py" "$REPO/tests/test_memory.py" -k "cuda or gpu" 2>&1 | tee "$OUT/gpu-tests.log" | tail -15
