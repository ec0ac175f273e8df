#!/usr/bin/env bash
# GPU check of training (issue 5): tests, partition time of a 24-layer transformer, and the
# training benchmark (eager, Inductor with and without CUDA graphs, ait with and without CUDA
# graphs, and a memory-budget sweep). Writes under $OUT (default /tmp/ait_train): env.log,
# tests.log, partition_bench.log, train_bench.log, train_bench.json/.md, budget_sweep.png.
#   WORKLOAD=encoder_block|vit_b16   one workload (to split the work over calls of < 10 minutes)
#   TESTS="tests/a.py tests/b.py"    which test files run first (default: the partitioner's);
#                                    SKIP_TESTS=1 skips them and the partition benchmark
#   MODES= BUDGETS= SWEEP_MODES= ITERS=   passed to benchmarks.train_bench
set -u
OUT=${OUT:-/tmp/ait_train}
WORKLOAD=${WORKLOAD:-encoder_block,vit_b16}
mkdir -p "$OUT"
python3 -c "import scipy, networkx, matplotlib, jinja2" 2>/dev/null || python3 -m pip install -q scipy networkx matplotlib jinja2
python3 -c "import ait_dynamo.partitioners" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_LIMIT:-150}" python3 -m pytest -q -x ${TESTS:-tests/test_partitioner.py} > "$OUT/tests.log" 2>&1
  echo "tests rc=$? ($(tail -1 "$OUT/tests.log"))"
  timeout 60 python3 -m benchmarks.partition_bench --repeat 1 > "$OUT/partition_bench.log" 2>&1
  echo "partition bench rc=$?"; cat "$OUT/partition_bench.log"
fi
timeout "${LIMIT:-300}" python3 -m benchmarks.train_bench --out "$OUT" --workload "$WORKLOAD" \
  --modes "${MODES:-eager,inductor,inductor-cudagraphs,ait,ait-cudagraphs}" \
  --budgets "${BUDGETS:-1.0,0.6,0.4,0.25,0.1}" --sweep-modes "${SWEEP_MODES:-ait-cudagraphs}" --iters "${ITERS:-20}" \
  > "$OUT/train_bench.log" 2>&1
echo "train bench rc=$?"; cat "$OUT/train_bench.md" 2>/dev/null || tail -30 "$OUT/train_bench.log"
