#!/usr/bin/env bash
# The GPU checks in one call: install netdsl into this machine's Python (from wheels in .whl/ where it
# has no network), then run the parts asked for, each under its own timeout, each writing under OUTDIR.
#   bash bench/gpu_run.sh OUTDIR [PART...]     PART: feed models memory tests (default: all four)
#   feed    bench/feed_bench.py: netdsl train on real JPEGs (folder, prepared store; decode on the
#           workers or the GPU) against synthetic batches (issue 11)                    ~5 min on an H200
#   models  bench/gpu_bench.py: training steps, torchvision vs lowered, tower ops (issue 10)  ~4 min
#   memory  bench/memory_bench.py --device cuda: estimate vs max_memory_allocated (issue 15)  ~2 min
#   tests   the tests that need CUDA                                                      ~1-2 min
set -uo pipefail
OUT=${1:-/tmp/netdsl-gpu}
shift || true
PARTS=${*:-feed models memory tests}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
cd "$REPO"
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl; fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"
export PYTHONUNBUFFERED=1
cd /tmp  # not the repository root: there `import netdsl.cli` would miss the installed mapping of cli/
for part in $PARTS; do
    start=$(date +%s)
    case $part in
    feed)
        timeout "${FEED_TIMEOUT:-420}" python3 "$REPO/bench/feed_bench.py" --out "$OUT/RESULTS-feed.md" \
            --json "$OUT/feed.json" > "$OUT/feed-bench.log" 2>&1
        echo "feed benchmark exit $?"; tail -25 "$OUT/feed-bench.log";;
    models)
        timeout "${BENCH_TIMEOUT:-420}" python3 "$REPO/bench/gpu_bench.py" --out "$OUT/RESULTS-gpu.md" \
            --json "$OUT/gpu.json" > "$OUT/gpu-bench.log" 2>&1
        echo "model benchmark exit $?"; tail -5 "$OUT/gpu-bench.log";;
    memory)
        timeout "${MEMORY_TIMEOUT:-150}" python3 "$REPO/bench/memory_bench.py" --device cuda \
            --out "$OUT/RESULTS-memory.md" > "$OUT/memory-bench.log" 2>&1
        echo "memory benchmark exit $?"; tail -3 "$OUT/memory-bench.log";;
    tests)
        timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -p no:cacheprovider -q -p no:warnings --rootdir "$REPO" \
            "$REPO/tests/test_compile.py" "$REPO/tests/test_lowering.py" "$REPO/tests/test_memory.py" \
            "$REPO/tests/test_decode_device.py" "$REPO/tests/test_kernels.py" -k "cuda or gpu" 2>&1 | tee "$OUT/gpu-tests.log" | tail -15;;
    *) echo "unknown part $part (feed models memory tests)";;
    esac
    echo "$part took $(( $(date +%s) - start )) s"
done
