#!/usr/bin/env bash
# One GPU check in one device call (a GPU is lent for ~15 minutes, for everything). Steps, in the order of what
# matters most if time runs out: build the extension there; import it and run one CUDA op; the CUDA tests
# (tests/test_cuda.py, the CUDA rows of tests/test_ops.py and tests/test_foreach.py); a 2^31+ element case; a
# compute-sanitizer memcheck of a subset of every op forward+backward and the foreach kernels; the benchmarks.
#
#     OUT=/some/dir bash benchmarks/gpu_check.sh             # $OUT defaults to ./gpu_check_out
#     OUT=/tmp/x bash benchmarks/gpu_check.sh --dry-run      # no GPU needed: the script's own logic (make test)
#
# Every step has a cap and a share of the overall budget (GPU_CHECK_BUDGET_S, default 480 s): it runs under
# `timeout min(cap, time left - the minimum shares of the steps after it)`. A failing step does not stop the
# others, except that nothing needing the extension runs after a failed build or import. Writes into $OUT:
#   gpu_check.log                     everything, progress as it goes, the summary at the end
#   summary.txt                       the summary alone: each step ok / FAILED / TIMEOUT / SKIPPED (why)
#   cuda-tests.txt, memcheck.txt      those steps' full output
#   cuda-<gpu>.json / .md / .png      the benchmark results (saved after each scenario)
# Needs: python3 with torch (CUDA build) and nvcc on the machine (no network); it installs nothing. Works with
# the GPU machines' Python 3.12 / torch 2.11.
# Knobs: GPU_CHECK_STEPS="build import cuda-tests big memcheck benchmarks" (the default: all), BENCH_DEVICE
# (default cuda), BENCH_ARGS (extra run.py flags), PY (the python to use), GPU_CHECK_DRY_FAIL (--dry-run only:
# the step that fails, to check the failure path; GPU_CHECK_DRY_FULL=1: each step takes its whole limit).
set -u
cd "$(dirname "$0")/.."
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    *) echo "usage: OUT=dir bash benchmarks/gpu_check.sh [--dry-run]"; exit 2 ;;
  esac
done
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET_S:-480}"
SUMMARY=()
BROKEN=""  # set when the extension cannot be used: the reason later steps are skipped

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
if [ "$DRY_RUN" = 1 ] && [ -z "$SANITIZER" ]; then SANITIZER=compute-sanitizer; fi  # to show its command

ORDER="build import cuda-tests big memcheck benchmarks"
STEPS=" ${GPU_CHECK_STEPS:-$ORDER} "
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
# Each step's cap and minimum share (seconds): a step keeps the minimum shares of the wanted steps after it.
declare -A CAP=([build]=180 [import]=40 [cuda-tests]=180 [big]=60 [memcheck]=100 [benchmarks]=400)
declare -A MIN=([build]=60 [import]=20 [cuda-tests]=120 [big]=30 [memcheck]=40 [benchmarks]=30)

VIRTUAL=0  # --dry-run: seconds the steps would have taken
remaining() { echo $(( BUDGET - ($(date +%s) + VIRTUAL - START) )); }
reserve_after() {
  local name="$1" seen=0 total=0 s
  for s in $ORDER; do
    if [ "$seen" = 1 ] && wanted "$s"; then total=$(( total + MIN[$s] )); fi
    [ "$s" = "$name" ] && seen=1
  done
  echo "$total"
}
skip() { SUMMARY+=("$1: SKIPPED ($2)"); echo; echo "=============== $1: skipped ($2) ==============="; }

# step NAME CMD...: runs CMD under its limit; records "NAME: ok|FAILED rc=N|TIMEOUT  (seconds)". Returns CMD's rc.
step() {
  local name="$1"; shift
  local reserve; reserve=$(reserve_after "$name")
  local left=$(( $(remaining) - reserve ))
  local cap=${CAP[$name]}
  local limit=$(( cap < left ? cap : left ))
  echo
  echo "=============== $name (limit ${limit}s; $(remaining)s of ${BUDGET}s left, ${reserve}s kept for later steps) ==============="
  if [ "$limit" -lt 15 ]; then
    skip "$name" "no time left: $(remaining)s remaining, ${reserve}s kept for the steps after it"
    return 1
  fi
  local t0; t0=$(date +%s)
  local rc
  if [ "$DRY_RUN" = 1 ]; then
    echo "dry run: would run: timeout --kill-after=10 $limit $*"
    if [ "${GPU_CHECK_DRY_FULL:-0}" = 1 ]; then VIRTUAL=$(( VIRTUAL + limit )); fi  # the worst case: all its limit
    rc=0
    if [ "${GPU_CHECK_DRY_FAIL:-}" = "$name" ]; then echo "dry run: failing $name on purpose"; rc=3; fi
  else
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
  fi
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then SUMMARY+=("$name: ok (${dt}s)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then SUMMARY+=("$name: TIMEOUT after ${dt}s (limit ${limit}s)")
  else SUMMARY+=("$name: FAILED rc=$rc (${dt}s)"); fi
  return $rc
}

echo "gpu_check: $(date -u +%FT%TZ) on $(hostname), python $PY, budget ${BUDGET}s$([ "$DRY_RUN" = 1 ] && echo ', DRY RUN')"
echo "steps: $STEPS"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | head -5
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
echo "nvcc: $(${CUDA_HOME:-/usr/local/cuda}/bin/nvcc --version 2>/dev/null | tail -1)   compute-sanitizer: ${SANITIZER:-none}"
if [ "$DRY_RUN" = 1 ]; then  # what the real run needs from the tree
  for f in setup.py tests/test_cuda.py tests/test_ops.py tests/gpu_sanitize.py benchmarks/run.py; do
    [ -f "$f" ] || { echo "dry run: missing $f"; exit 2; }
  done
fi

# 1. build in place (CUDA forced on; TORCH_CUDA_ARCH_LIST unset: torch uses the visible GPU's arch)
if wanted build; then
  step build "$PY" setup.py -q build_ext --inplace || BROKEN="the build did not complete"
fi

# 2. import and one CUDA op: without it nothing else can say anything
if wanted import; then
  if [ -n "$BROKEN" ]; then skip import "$BROKEN"
  else
    step import "$PY" -c "import safe_ops, torch; x = torch.ones(2, device='cuda'); print('safe_ops on', torch.cuda.get_device_name(0), safe_ops.add(x, x).tolist())" \
      || BROKEN="the import check did not pass"
  fi
fi

# 3. the CUDA tests: -rfE names each failure in the short summary; a per-test timeout where pytest-timeout is
# installed, else faulthandler dumps the stacks of a test that hangs past 60 s.
if wanted cuda-tests; then
  if [ -n "$BROKEN" ]; then skip cuda-tests "$BROKEN"
  else
    if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then PER_TEST=(--timeout=60); else PER_TEST=(-o faulthandler_timeout=60); fi
    step cuda-tests bash -c '"$@" 2>&1 | tee "'"$OUT"'/cuda-tests.txt"; exit "${PIPESTATUS[0]}"' _ \
      "$PY" -m pytest -q -rfE -p no:cacheprovider "${PER_TEST[@]}" tests/test_cuda.py tests/test_ops.py tests/test_foreach.py -k cuda
  fi
fi

# 4. a 2^31+ element case (64-bit indexing), outside the sanitizer; skips itself if memory is short
if wanted big; then
  if [ -n "$BROKEN" ]; then skip big "$BROKEN"; else step big "$PY" tests/gpu_sanitize.py --big; fi
fi

# 5. compute-sanitizer memcheck of a subset (float16 and float32: every kernel path), without the caching
# allocator so that small out-of-bounds accesses fall outside a live allocation and are reported
if wanted memcheck; then
  if [ -n "$BROKEN" ]; then skip memcheck "$BROKEN"
  elif [ -z "$SANITIZER" ]; then skip memcheck "compute-sanitizer not found"
  else
    PROBE=""
    if [ "$DRY_RUN" = 0 ]; then
      PROBE=$(timeout 60 "$SANITIZER" --tool memcheck "$PY" -c "import torch; torch.zeros(1, device='cuda').sum().item()" 2>&1)
    fi
    if [[ "$PROBE" == *"not supported"* ]] || [[ "$PROBE" == *"Device not supported"* ]]; then
      skip memcheck "compute-sanitizer cannot attach to this device: $(echo "$PROBE" | grep -m1 -i 'not supported')"
    else
      step memcheck bash -c '"$@" 2>&1 | tee "'"$OUT"'/memcheck.txt"; exit "${PIPESTATUS[0]}"' _ \
        env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck --error-exitcode 99 --print-limit 20 \
        --show-backtrace no "$PY" tests/gpu_sanitize.py --subset
    fi
  fi
fi

# 6. the benchmark suite (results saved after each scenario, so a timeout keeps what finished)
if wanted benchmarks; then
  if [ -n "$BROKEN" ]; then skip benchmarks "$BROKEN"
  else
    # shellcheck disable=SC2086
    step benchmarks "$PY" benchmarks/run.py --device "${BENCH_DEVICE:-cuda}" --out "$OUT" ${BENCH_ARGS:-}
  fi
fi

echo
echo "=============== summary ($(( $(date +%s) + VIRTUAL - START ))s of ${BUDGET}s) ==============="
: > "$OUT/summary.txt"
for s in "${SUMMARY[@]}"; do echo "  $s"; echo "$s" >> "$OUT/summary.txt"; done
ls -la "$OUT"
