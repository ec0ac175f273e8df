#!/usr/bin/env bash
# GPU check of the fusion work (issue 4): the fusion tests on CUDA, then the benchmark against
# eager and Inductor. Logs and JSON go to ${OUT:-./fusion_gpu_out}.
#   bash benchmarks/fusion_gpu_check.sh            # tests + full benchmark
#   bash benchmarks/fusion_gpu_check.sh tests      # only the tests
#   bash benchmarks/fusion_gpu_check.sh bench      # only the benchmark
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./fusion_gpu_out}"
mkdir -p "$OUT"
what="${1:-all}"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
if [ "$what" = all ] || [ "$what" = tests ]; then
  timeout 420 python -m pytest -q -ra -p no:cacheprovider tests/test_fusion_ops.py tests/test_fusion_planner.py tests/test_fusion_gpu.py \
    tests/test_seed_models.py tests/test_backend.py > "$OUT/tests.log" 2>&1
  echo "tests exit $?" | tee -a "$OUT/tests.log"
  tail -5 "$OUT/tests.log"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
  timeout 540 python -m benchmarks.fusion_bench --out "$OUT" > "$OUT/bench.log" 2>&1
  echo "bench exit $?" | tee -a "$OUT/bench.log"
  cat "$OUT/fusion_bench.txt" 2>/dev/null || tail -30 "$OUT/bench.log"
fi
