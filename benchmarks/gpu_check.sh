#!/usr/bin/env bash
# One GPU check in one device call (< 8 minutes): build the extension there, the tests (CUDA parts run with a
# GPU visible), a compute-sanitizer memcheck of every op forward+backward, a 2^31+ element case, and the
# benchmark suite on CUDA. Run from the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu_check.sh      # $OUT defaults to ./gpu_check_out
#
# Every step has its own time limit and a share of the overall budget (GPU_CHECK_BUDGET_S, default 450 s);
# a failing step does not stop the others. Writes into $OUT (few files, flat):
#   gpu_check.log                     everything, with a summary at the end
#   cuda-<gpu>.json / .md / .png      the benchmark results (the table is also in the log)
# Needs: torch with CUDA and nvcc on the machine (no network); it installs nothing.
# Knobs (for trying parts of it elsewhere): GPU_CHECK_STEPS="build tests memcheck big benchmarks" (the default:
# all), BENCH_DEVICE (default cuda), BENCH_ARGS (extra run.py flags), PY (the python to use).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
SUMMARY=()

# Python: the first that imports torch (the device machine has python3 with torch preinstalled).
PY="${PY:-}"
if [ -z "$PY" ]; then
  for c in python3 python .venv/bin/python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch" >/dev/null 2>&1; then PY="$c"; break; fi
  done
fi
if [ -z "$PY" ]; then echo "no python with torch found"; exit 2; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MAX_JOBS="${MAX_JOBS:-16}"
export SAFE_OPS_CUDA="${SAFE_OPS_CUDA:-1}"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
SANITIZER="$(command -v compute-sanitizer || true)"
if [ -z "$SANITIZER" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ]; then
  SANITIZER="$CUDA_HOME/bin/compute-sanitizer"
fi

STEPS=" ${GPU_CHECK_STEPS:-build tests memcheck big benchmarks} "
wanted() { [[ "$STEPS" == *" $1 "* ]]; }

remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME CAP_SECONDS RESERVE_SECONDS CMD...: run CMD under `timeout min(CAP, remaining - RESERVE)`;
# RESERVE keeps time for the steps after it. Records "NAME: ok|FAILED (rc)|TIMEOUT|SKIPPED  (seconds)".
step() {
  local name="$1" cap="$2" reserve="$3"; shift 3
  local left=$(( $(remaining) - reserve ))
  local limit=$(( cap < left ? cap : left ))
  echo
  echo "=============== $name (limit ${limit}s, $(remaining)s of the budget left) ==============="
  if [ "$limit" -lt 15 ]; then
    SUMMARY+=("$name: SKIPPED (no time left)")
    echo "skipped: no time left"
    return 0
  fi
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then SUMMARY+=("$name: ok (${dt}s)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then SUMMARY+=("$name: TIMEOUT after ${dt}s")
  else SUMMARY+=("$name: FAILED rc=$rc (${dt}s)"); fi
  return 0
}

echo "gpu_check: $(date -u +%FT%TZ) on $(hostname), python $PY, budget ${BUDGET}s"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | head -5
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
echo "nvcc: $(${CUDA_HOME:-/usr/local/cuda}/bin/nvcc --version 2>/dev/null | tail -1)   compute-sanitizer: ${SANITIZER:-none}"

# 1. build in place (CUDA forced on; TORCH_CUDA_ARCH_LIST unset: setup.py/torch use the visible GPU's arch)
if wanted build; then
  step "build" 300 150 "$PY" setup.py -q build_ext --inplace
  "$PY" -c "import safe_ops, torch; print('safe_ops imported; CUDA kernels:', torch.cuda.is_available() and safe_ops.add(torch.ones(2, device='cuda'), torch.ones(2, device='cuda')).tolist())" \
    || SUMMARY+=("import check: FAILED")
fi

# 2. the tests (CUDA-only tests skip without a GPU and run here)
if wanted tests; then
  step "tests" 150 130 "$PY" -m pytest -q -p no:cacheprovider tests
fi

# 3. compute-sanitizer memcheck of every op forward+backward and the foreach kernels (small sizes; see tests/gpu_sanitize.py)
if wanted memcheck; then
  if [ -n "$SANITIZER" ]; then
    step "memcheck" 120 100 "$SANITIZER" --tool memcheck --error-exitcode 99 --print-limit 20 \
      --show-backtrace no "$PY" tests/gpu_sanitize.py
  else
    SUMMARY+=("memcheck: SKIPPED (compute-sanitizer not found)")
  fi
fi

# 4. a 2^31+ element case (64-bit indexing), outside the sanitizer; skips itself if memory is short
if wanted big; then
  step "big (2^31+ elements)" 60 90 "$PY" tests/gpu_sanitize.py --big
fi

# 5. the benchmark suite (results saved after each scenario, so a timeout keeps what finished)
if wanted benchmarks; then
  # shellcheck disable=SC2086
  step "benchmarks" 400 0 "$PY" benchmarks/run.py --device "${BENCH_DEVICE:-cuda}" --out "$OUT" ${BENCH_ARGS:-}
fi

echo
echo "=============== summary ($(( $(date +%s) - START ))s) ==============="
for s in "${SUMMARY[@]}"; do echo "  $s"; done
ls -la "$OUT"
