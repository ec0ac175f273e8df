#!/usr/bin/env bash
# The OpInfo sweep on the GPU machine (issue 10): every op of op_db through ait on CUDA, split
# over worker processes (Triton's compiles are CPU work), within a deadline so that one device
# call ends in time; a later call resumes from the JSON an earlier one left.
#   OUT=folder                   results: opinfo_<dtype>.json (outcomes), opinfo_<dtype>.md (summary), opinfo.log
#   DTYPES="float32 float16 bfloat16"   float32 compares gradients too, the others forward only
#   JOBS=14  DEADLINE=400        worker processes; seconds per dtype before no new unit (40 samples of one op) starts
#   RESUME=folder                opinfo_<dtype>.json files of an earlier call: their ops are kept
#   SAMPLES=N                    first N samples per op (default: all); GIVEN_ONLY=1 skips non-contiguous copies
# Needs expecttest (torch.testing._internal imports it): carried as a wheel in .whl/.
set -u
OUT=${OUT:-/tmp/ait_opinfo}
mkdir -p "$OUT"
. benchmarks/device_setup.sh "$OUT/opinfo.log"
extra=()
[ -n "${SAMPLES:-}" ] && extra+=(--samples "$SAMPLES")
[ "${GIVEN_ONLY:-0}" = 1 ] && extra+=(--given-only)
for dtype in ${DTYPES:-float32}; do
  grads=()
  [ "$dtype" = float32 ] || grads=(--no-gradients)
  resume=()
  [ -n "${RESUME:-}" ] && [ -f "$RESUME/opinfo_$dtype.json" ] && resume=(--resume "$RESUME/opinfo_$dtype.json")
  echo "== $dtype" >> "$OUT/opinfo.log"
  python3 tests/opinfo_sweep.py --device cuda --dtype "$dtype" "${grads[@]}" "${extra[@]}" "${resume[@]}" \
    --jobs "${JOBS:-14}" --deadline "${DEADLINE:-400}" --out "$OUT/opinfo_$dtype.json" "$@" >> "$OUT/opinfo.log" 2>&1
  python3 tests/opinfo_sweep.py --merge "$OUT/opinfo_$dtype.json" --out "$OUT/opinfo_$dtype.md" \
    --title "OpInfo sweep, H200, $dtype$([ "$dtype" = float32 ] && echo ' with gradients')"
  grep -E "units of|MISMATCH|bad \(" "$OUT/opinfo.log" | tail -n 20
done
