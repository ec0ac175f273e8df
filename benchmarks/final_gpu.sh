#!/usr/bin/env bash
# One device call for the committed results: GPU-relevant tests, the fusion micro-benchmarks and
# the training benchmark (eager, Inductor, ait and an ait memory-budget sweep).
# Writes under ${OUT:-/tmp/ait_final}.
set -u
OUT=${OUT:-/tmp/ait_final}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > /dev/null 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -rfE -p no:cacheprovider ${TESTS:-tests/test_fusion_gpu.py tests/test_memory_schedule.py tests/test_benchmarks.py tests/test_backend.py} > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/gpu_tests.log" | tail -8
timeout "${BENCH_LIMIT:-120}" python3 -m benchmarks.fusion_bench --out "$OUT" \
  --only "${BENCH_ONLY:-tutorial,layer_norm_32768x768_float16,softmax_32768x768_float16,pointwise_chain}" > "$OUT/fusion_bench.log" 2>&1
echo "fusion bench rc=$?"; cat "$OUT/fusion_bench.txt" 2>/dev/null
OUT="$OUT" SKIP_TESTS=1 LIMIT="${TRAIN_LIMIT:-300}" ITERS=10 MODES=eager,inductor,ait BUDGETS="${BUDGETS:-0.5,0.25}" \
  SWEEP_MODES=ait bash benchmarks/train_gpu.sh
