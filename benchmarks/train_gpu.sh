#!/usr/bin/env bash
# GPU check of the min-cut partitioner (issue 5): partitioner tests, partition time of a 24-layer
# transformer, and the training benchmark (eager, Inductor, ait with our / the default / functorch's
# partitioner, and an ait memory-budget sweep). Writes under $OUT (default /tmp/ait_train):
# env.log, test_partitioner.log, partition_bench.log, train_bench.log, train_bench.json/.md,
# budget_sweep.png. WORKLOAD=encoder_block or vit_b16 runs one workload; SKIP_TESTS=1 skips the
# tests and the partition benchmark (to split the work over two calls of about 4 minutes).
set -u
OUT=${OUT:-/tmp/ait_train}
WORKLOAD=${WORKLOAD:-encoder_block,vit_b16}
mkdir -p "$OUT"
python3 -c "import scipy, networkx, matplotlib, jinja2" 2>/dev/null || python3 -m pip install -q scipy networkx matplotlib jinja2
python3 -c "import ait_dynamo.partitioners" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout 100 python3 -m pytest -q -x tests/test_partitioner.py > "$OUT/test_partitioner.log" 2>&1
  echo "partitioner tests rc=$? ($(tail -1 "$OUT/test_partitioner.log"))"
  timeout 60 python3 -m benchmarks.partition_bench --repeat 1 > "$OUT/partition_bench.log" 2>&1
  echo "partition bench rc=$?"; cat "$OUT/partition_bench.log"
fi
timeout 300 python3 -m benchmarks.train_bench --out "$OUT" --workload "$WORKLOAD" > "$OUT/train_bench.log" 2>&1
echo "train bench rc=$?"; cat "$OUT/train_bench.md" 2>/dev/null || tail -30 "$OUT/train_bench.log"
