#!/usr/bin/env bash
# The GPU checks: install netdsl into this machine's Python (from wheels in .whl/ where it has no
# network), then run the parts asked for, in that order, each under its own timeout (seconds, the
# variables below), each writing under OUTDIR, so a part cut short keeps what it measured.
#   bash bench/gpu_run.sh OUTDIR [PART...]     PART: feed models memory tests (default: all four)
#   tests   the tests that need CUDA                                      TEST_TIMEOUT 150    ~2 min on an H200
#   models  bench/gpu_bench.py: training steps, torchvision vs lowered,   BENCH_TIMEOUT 300   ~3-4 min
#           tower ops, the fused LRN's tiles (issue 10)
#   memory  bench/memory_bench.py --device cuda: estimate vs              MEMORY_TIMEOUT 100  ~1 min
#           max_memory_allocated (issue 15)
#   feed    bench/feed_bench.py: netdsl train on real JPEGs (folder,      FEED_TIMEOUT 300    ~4-5 min
#           prepared store; decode on the workers or the GPU) against synthetic batches (issue 11)
# A device session has 15 minutes, starts and idle time included, and one call at most 10: two calls,
#   `bash bench/gpu_run.sh OUT tests models memory` (run's timeout_s 580), then `... OUT feed` (320).
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
        timeout "${FEED_TIMEOUT:-300}" python3 "$REPO/bench/feed_bench.py" --out "$OUT/RESULTS-feed.md" \
            --json "$OUT/feed.json" > "$OUT/feed-bench.log" 2>&1
        echo "feed benchmark exit $?"; tail -25 "$OUT/feed-bench.log";;
    models)
        timeout "${BENCH_TIMEOUT:-300}" python3 "$REPO/bench/gpu_bench.py" --out "$OUT/RESULTS-gpu.md" \
            --json "$OUT/gpu.json" > "$OUT/gpu-bench.log" 2>&1
        echo "model benchmark exit $?"; tail -5 "$OUT/gpu-bench.log";;
    memory)
        timeout "${MEMORY_TIMEOUT:-100}" python3 "$REPO/bench/memory_bench.py" --device cuda --no-cpu \
            --out "$OUT/RESULTS-memory.md" > "$OUT/memory-bench.log" 2>&1
        echo "memory benchmark exit $?"; tail -3 "$OUT/memory-bench.log";;
    tests)
        timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -p no:cacheprovider -q -p no:warnings --rootdir "$REPO" \
            "$REPO/tests/test_compile.py" "$REPO/tests/test_lowering.py" "$REPO/tests/test_memory.py" \
            "$REPO/tests/test_decode_device.py" "$REPO/tests/test_kernels.py" "$REPO/tests/test_profile.py" -k "cuda or gpu" 2>&1 | tee "$OUT/gpu-tests.log" | tail -15;;
    *) echo "unknown part $part (feed models memory tests)";;
    esac
    echo "$part took $(( $(date +%s) - start )) s"
done
