#!/usr/bin/env bash
# Every CPU benchmark in one go, one after another (never side by side: they would share the two
# cores and measure each other), each one's output kept in OUT_DIR/<name>.txt. From the repository
# root, with the project's environment installed (`make install`):
#
#     bash benchmark/run_cpu.sh [OUT_DIR]          # default: bench-out/
#
# ONLY=throughput,storage_overhead runs a subset. The figures in benchmark/RESULTS.md come from
# this script; copy them from OUT_DIR by hand, with the date and the machine it printed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="$(realpath -m "${1:-bench-out}")"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-.venv/bin/python}"
LSTMBENCH="${LSTMBENCH:-.venv/bin/lstmbench}"
ONLY="${ONLY:-throughput,storage_overhead,storage_scaling,search_scaling}"

step() {  # step NAME COMMAND...: run it, time it, keep what it printed
    local name="$1"
    shift
    [[ ",$ONLY," == *",$name,"* ]] || return 0
    echo "== $name · $(date -u '+%Y-%m-%d %H:%M:%S UTC') · $*" | tee "$OUT_DIR/$name.txt"
    local start=$SECONDS
    "$@" >>"$OUT_DIR/$name.txt" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT_DIR/$name.txt"
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p') · $(nproc) cores · $(free -g | awk '/Mem:/ {print $2}') GiB"
step throughput "$PY" benchmark/throughput.py
step storage_overhead "$PY" benchmark/storage_overhead.py
step storage_scaling "$PY" benchmark/storage_scaling.py
step search_scaling "$PY" benchmark/search_scaling.py
# Not in the default set: it trains the seed's seven models on real CIFAR-10 for minutes.
step reproduce "$LSTMBENCH" reproduce --dataset imagefolder --data-dir ../shared/datasets/cifar10 \
    --epochs "${REPRODUCE_EPOCHS:-3}" --limit-train "${REPRODUCE_TRAIN:-10000}" \
    --limit-test "${REPRODUCE_TEST:-2000}"
