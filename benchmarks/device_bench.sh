#!/usr/bin/env bash
# Benchmarks on the GPU machine within one device call: each argument is a subcommand of
# `python -m benchmarks`, run in order, each under its own time limit. From the repository root:
#
#     OUT=/some/folder bash benchmarks/device_bench.sh [step ...]        (default steps: run micro)
#
# Steps, and what each leaves in $OUT (flat, few files: what the device tool brings back):
#   run        results.json, results.md, speedup.png, compile_time.png: the quick sweep, cases
#              started within RUN_BUDGET seconds (default 220)
#   micro      micro.json, micro.md
#   fusion     fusion_bench.json, fusion_bench.md
#   train      train_bench.json, train_bench.md, budget_sweep.png
#   partition  partition_bench.json
#   profile    profile.tar.gz (a table per workload and backend, profile.json, ait's debug dumps)
#   ddp        ddp_bench.json, ddp_bench.md
# and log.txt (everything printed); past PACK_OVER (6) files, all but log.txt go into
# bench.tar.gz. <STEP>_ARGS replaces a step's extra arguments (defaults below:
# RUN_ARGS="--workload vit_l16_384,vit_b16_train" for what a first call did not reach, then merge
# with `python -m benchmarks report first.json second.json`; TRAIN_ARGS="--budgets 0.5,0.25";
# PROFILE_ARGS="--memory --host"); <STEP>_LIMIT its limit in seconds. Tests are not a step:
# `OUT=... TESTS="tests/test_x.py" bash benchmarks/gpu_tests.sh` runs them.
#
# The scripts this one replaced, as calls of it (their committed results name them):
#   device_run.sh  = device_bench.sh run micro
#   train_gpu.sh   = TESTS=tests/test_partitioner.py gpu_tests.sh, then device_bench.sh partition train
#   final_gpu.sh   = TESTS="..." gpu_tests.sh, then TRAIN_ARGS="--backends eager,inductor,ait
#                    --sweep-backends ait --budgets 0.5,0.25" device_bench.sh fusion train
#   profile_gpu.sh = device_bench.sh profile
# shellcheck disable=SC2086  # the *_ARGS variables hold several words: split on purpose
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/ait_bench_out}
PY=${PYTHON:-python3}  # the GPU machine: python3 is the interpreter that holds torch; its `pip` is another
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
. benchmarks/device_setup.sh /dev/null  # the versions line goes to log.txt through the tee above
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(run micro)
started=$(date +%s)
status=0
stamp() { echo "=== [$(( $(date +%s) - started ))s] $*"; }

step() {  # name, limit in seconds, then the subcommand and its arguments
  local name=$1 limit=$2
  shift 2
  stamp "$name: python -m benchmarks $* (limit ${limit}s)"
  timeout -k 15 "$limit" "$PY" -m benchmarks "$@"
  local rc=$?
  [ "$rc" -eq 124 ] && echo "$name hit its time limit: the cases it finished are in its JSON"
  echo "$name exit $rc (0 ok, 1 wrong result or error, 2 bad arguments, 124 time limit)"
  [ "$rc" -eq 0 ] || status=1
}

for name in "${steps[@]}"; do
  case "$name" in
    run)
      step run "${RUN_LIMIT:-280}" run --time-budget "${RUN_BUDGET:-220}" --out "$OUT" --no-plots ${RUN_ARGS:-}
      # markdown and plots from the JSON, also when the run was cut short
      [ -f "$OUT/results.json" ] && { "$PY" -m benchmarks report "$OUT/results.json" --out "$OUT" > /dev/null || echo "report failed"; }
      ;;
    micro) step micro "${MICRO_LIMIT:-70}" micro --out "$OUT" ${MICRO_ARGS:-} ;;
    fusion)
      step fusion "${FUSION_LIMIT:-120}" fusion --out "$OUT" \
        ${FUSION_ARGS:---only tutorial,layer_norm_32768x768_float16,softmax_32768x768_float16,pointwise_chain}
      ;;
    train) step train "${TRAIN_LIMIT:-300}" train --out "$OUT" ${TRAIN_ARGS:-} ;;
    partition) step partition "${PARTITION_LIMIT:-60}" partition --out "$OUT" ${PARTITION_ARGS:---repeat 1} ;;
    profile)
      step profile "${PROFILE_LIMIT:-500}" profile --out "$OUT/profile" ${PROFILE_ARGS:---memory}
      tar czf "$OUT/profile.tar.gz" -C "$OUT" profile && rm -rf "$OUT/profile"
      ;;
    ddp) step ddp "${DDP_LIMIT:-300}" ddp --out "$OUT" ${DDP_ARGS:-} ;;
    *) echo "unknown step '$name': run, micro, fusion, train, partition, profile, ddp"; status=1 ;;
  esac
done

stamp "done: exit $status"
ls -la "$OUT"
# The device tool brings back at most 8 files a call (2 folders down): past PACK_OVER files
# (default 6), everything but log.txt goes into one bench.tar.gz (a profile of BERT was lost to
# that limit on 2026-12-02).
files=$(find "$OUT" -type f | wc -l)
if [ "$files" -gt "${PACK_OVER:-6}" ]; then
  (cd "$OUT" && find . -type f ! -name log.txt ! -name bench.tar.gz -print0 | tar czf bench.tar.gz --null -T - --remove-files)
  find "$OUT" -mindepth 1 -type d -empty -delete
  echo "packed $files files into $OUT/bench.tar.gz"
fi
exit "$status"
