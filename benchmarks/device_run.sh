#!/usr/bin/env bash
# The whole GPU benchmark in one call of at most ~7 minutes; run from the repository root:
#
#     OUT=/some/folder bash benchmarks/device_run.sh [extra arguments of benchmarks.run]
#
# e.g. `... device_run.sh --workload vit_l16_384,vit_b16_train` for the cases a first call did not
# reach (merge the runs with `python -m benchmarks.report first.json second.json`).
#
# Writes into $OUT (at most 8 files, no subfolders): log.txt (everything printed), results.json,
# results.md, speedup.png and compile_time.png (when matplotlib is installed), micro.md and micro.json
# (or micro_pytest.json when pytest-benchmark is installed). Environment knobs, in seconds:
# RUN_BUDGET (stop starting benchmark cases), RUN_TIMEOUT (hard limit of the main run), MICRO_TIMEOUT.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/ait_bench_out}
PY=${PYTHON:-python3}  # the GPU machine: python3 is the interpreter that holds torch; its `pip` is another
RUN_BUDGET=${RUN_BUDGET:-220}
RUN_TIMEOUT=${RUN_TIMEOUT:-280}
MICRO_TIMEOUT=${MICRO_TIMEOUT:-70}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ait_bench_work.XXXXXX)
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
started=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - started ))s] $*"; }

stamp "install (editable, no dependencies)"
"$PY" -m pip install -q -e . --no-deps --no-build-isolation || { echo "pip install failed"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
"$PY" -c "import torch, triton, ait_dynamo; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'ait_dynamo', ait_dynamo.__file__, 'gpu', torch.cuda.get_device_name())"

stamp "main benchmark: python -m benchmarks.run (budget ${RUN_BUDGET}s, hard limit ${RUN_TIMEOUT}s) $*"
timeout -k 15 "$RUN_TIMEOUT" "$PY" -m benchmarks.run --time-budget "$RUN_BUDGET" --out "$WORK/run" --no-plots "$@"
run_status=$?
[ "$run_status" -eq 124 ] && echo "main benchmark hit the hard limit: the cases it finished are in results.json"

stamp "report (markdown, plots) from results.json"
if [ -f "$WORK/run/results.json" ]; then
  "$PY" -m benchmarks.report "$WORK/run/results.json" --out "$OUT" > /dev/null || echo "report failed"
else
  echo "no results.json was written"
fi

if "$PY" -c "import pytest_benchmark" 2>/dev/null; then
  stamp "micro-benchmarks: pytest benchmarks/micro --benchmark-only (limit ${MICRO_TIMEOUT}s)"
  timeout -k 10 "$MICRO_TIMEOUT" "$PY" -m pytest benchmarks/micro --benchmark-only -q \
    --benchmark-json="$OUT/micro_pytest.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name
  micro_status=$?
else
  stamp "micro-benchmarks: python -m benchmarks.micro (pytest-benchmark not installed; limit ${MICRO_TIMEOUT}s)"
  timeout -k 10 "$MICRO_TIMEOUT" "$PY" -m benchmarks.micro --out-dir "$OUT"
  micro_status=$?
fi

rm -rf "$WORK"
stamp "done: benchmarks.run exit $run_status, micro-benchmarks exit $micro_status (0 ok, 1 wrong result or error, 124 time limit)"
ls -la "$OUT"
exit $(( run_status != 0 || micro_status != 0 ))
