#!/usr/bin/env bash
# GPU check of the min-cut partitioner (issue 5), in one batch that fits in about 8 minutes:
# partitioner tests, partition time of a 24-layer transformer, and the training benchmark
# (encoder block and ViT-B/16: eager, Inductor, ait with three partitioners, ait memory budget sweep).
# Writes logs, train_bench.json/.md and budget_sweep.png under $OUT (default /tmp/ait_train).
set -u
OUT=${OUT:-/tmp/ait_train}
mkdir -p "$OUT"
python -c "import scipy, networkx, matplotlib, jinja2" 2>/dev/null || pip install -q scipy networkx matplotlib jinja2
python -c "import ait_dynamo.partitioners" 2>/dev/null || pip install -q --no-deps --no-build-isolation -e .
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/env.log"
timeout 120 python -m pytest -q -x tests/test_partitioner.py > "$OUT/test_partitioner.log" 2>&1
echo "partitioner tests rc=$? ($(tail -1 "$OUT/test_partitioner.log"))"
timeout 90 python -m benchmarks.partition_bench > "$OUT/partition_bench.log" 2>&1
echo "partition bench rc=$?"; cat "$OUT/partition_bench.log"
timeout 330 python -m benchmarks.train_bench --out "$OUT" > "$OUT/train_bench.log" 2>&1
echo "train bench rc=$?"; cat "$OUT/train_bench.md" 2>/dev/null || tail -30 "$OUT/train_bench.log"
