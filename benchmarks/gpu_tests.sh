#!/usr/bin/env bash
# The whole test suite on the GPU machine, spread over processes with pytest-xdist (on that
# machine's image), within one device call. Tests that fail under the parallel load run once more
# alone, so that a timing- or memory-sensitive test is judged on a quiet GPU; both logs are kept.
#   OUT=folder      gpu_tests.log (parallel run), gpu_tests_rerun.log (failures rerun alone)
#   TESTS="tests/test_x.py ..."   default: tests
#   JOBS=12  LIMIT=420            processes; seconds for the parallel run
set -u
OUT=${OUT:-/tmp/ait_gpu_tests}
mkdir -p "$OUT"
. benchmarks/device_setup.sh "$OUT/gpu_tests.log"
# -v: each result is logged as it comes (``[gw3] [ 37%] FAILED tests/...``), so a run cut short by
# its time limit still names its failures (the short summary at the end never comes then)
timeout "${LIMIT:-420}" python3 -m pytest -v -rfE -p no:cacheprovider -n "${JOBS:-12}" ${TESTS:-tests} >> "$OUT/gpu_tests.log" 2>&1
echo "parallel run rc=$?"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.log" | grep -v "^\[gw" | tail -n 12
failed=$(grep -oE "(FAILED|ERROR) tests/[^ ]+" "$OUT/gpu_tests.log" | awk '{print $2}' | sort -u)
echo "failed or errored: ${failed:-none}"
if [ -n "$failed" ]; then
  timeout "${RERUN_LIMIT:-150}" python3 -m pytest -q -rfE -p no:cacheprovider $failed > "$OUT/gpu_tests_rerun.log" 2>&1
  echo "rerun alone rc=$?"
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests_rerun.log" | tail -n 12
fi
