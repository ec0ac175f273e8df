#!/usr/bin/env bash
# One device call: the whole test suite on CUDA, the fusion micro-benchmarks at the issue's sizes,
# and a profile of the encoder block's training step. Writes under ${OUT:-/tmp/ait_gpu_check}.
set -u
OUT=${OUT:-/tmp/ait_gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > /dev/null 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT/env.log" 2>&1
timeout "${TEST_LIMIT:-280}" python3 -m pytest -q -ra -p no:cacheprovider tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?: $(tail -1 "$OUT/gpu_tests.log")"
timeout "${BENCH_LIMIT:-200}" python3 -m benchmarks.fusion_bench --out "$OUT" \
  --only "${BENCH_ONLY:-tutorial,layer_norm_32768x768,softmax_32768x768,pointwise_chain}" > "$OUT/fusion_bench.log" 2>&1
echo "fusion bench rc=$?"; cat "$OUT/fusion_bench.txt" 2>/dev/null
