#!/usr/bin/env bash
# GPU benchmark for one NVIDIA machine (written for an H200), in one call of at most 8 minutes,
# with nothing to download. Run from the repository root:
#
#     bash benchmark/gpu.sh [OUT_DIR]
#
# 1. Training throughput for cnn and lstm (hidden 128 and 512) on synthetic data of CIFAR-10 size,
#    resident on the GPU: the trainer against the bare model (forward/backward/step on tensors made
#    in advance) and a seed-style per-sample PIL DataLoader (benchmark/throughput.py --device cuda).
# 2. Packing: k = 1, 2, 4, 8 concurrent workers of benchmark/gpu-pack.toml on the one GPU, each k on
#    a fresh SQLite study; trials/minute is measured from the trials' own start and completion
#    times (worker start-up excluded), with the wall time of the whole launch beside it.
# Everything printed is also written to OUT_DIR (default $OUT or ./gpu-bench).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-bench}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
LOG="$OUT_DIR/gpu-bench.log"
exec > >(tee -a "$LOG") 2>&1

echo "== lstmbench GPU benchmark · $(date -u '+%Y-%m-%d %H:%M UTC')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') · $(nproc) cores"
export LSTMBENCH_CACHE_DIR="$OUT_DIR/cache"

echo
echo "== 1. throughput (samples/s), synthetic CIFAR-size data on the GPU"
timeout 200 "$PY" benchmark/throughput.py --device cuda --synthetic --repeats 3 --steps 40 \
  --images 8192 --json | tee "$OUT_DIR/throughput.txt"

echo
echo "== 2. concurrent workers on one GPU (benchmark/gpu-pack.toml)"
"$PY" benchmark/gpu_pack.py --study benchmark/gpu-pack.toml --workers 1,2,4,8 \
  --trials-per-worker 3 --time-limit 240 --out "$OUT_DIR" | tee "$OUT_DIR/packing.txt"
echo "== done · $(date -u '+%H:%M:%S UTC')"
