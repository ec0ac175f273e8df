# The device runs issue 14 still needs (README.md, "Next device run"), as two calls of `run`
# (carry [".whl"]), each under 10 minutes and at most eight files back:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/gemm_seeds/next_calls.sh
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/gemm_seeds/next_calls.sh
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
B="eager,inductor,inductor-max-autotune,ait,ait+autotune=1,ait+gemm_backends=aten:triton:cutlass+autotune=1"
rows() { grep -E "^\[|failed \(" "$1" | cut -c1-400; }
if [ "${CALL:-1}" = 1 ]; then
  timeout 90 python3 -m pytest -v -rfE -p no:cacheprovider tests/test_cublaslt_epilogue_gpu.py > "$OUT/cublaslt_tests.log" 2>&1
  echo "cublaslt tests rc=$?"; grep -E "PASSED|FAILED|ERROR|passed|failed" "$OUT/cublaslt_tests.log" | tail -n 10
  timeout 330 python3 -m benchmarks run --workload vit_b16_224 --batch 128 --backends "$B" --no-plots --out "$OUT/vit_b" > "$OUT/vit_b.log" 2>&1
  echo "vit_b rc=$?"; rows "$OUT/vit_b.log"
  # what makes ait's step wait at batch 128 (issue 12): host ~ kernel time where Inductor's is not
  timeout 100 python3 benchmarks/results/nvidia-h200/gemm_seeds/sync_probe.py > "$OUT/sync_probe.log" 2>&1
  echo "sync probe rc=$?"; grep -E "^batch|^    " "$OUT/sync_probe.log" | head -n 40
  timeout 90 python3 -m benchmarks profile --workload encoder_block --batch 128 --backends inductor,ait --timeline --out /tmp/prof > /tmp/prof.log 2>&1
  echo "profile rc=$?"; cp /tmp/prof/*.txt "$OUT/" 2>/dev/null
else
  timeout 330 python3 -m benchmarks run --workload vit_l16_384 --batch 16 --backends "$B" --no-plots --out "$OUT/vit_l" > "$OUT/vit_l.log" 2>&1
  echo "vit_l rc=$?"; rows "$OUT/vit_l.log"
  timeout 150 python3 -m benchmarks run --workload simple_mlp --batch 1024 --backends "$B" --no-plots --out "$OUT/mlp" > "$OUT/mlp.log" 2>&1
  echo "mlp rc=$?"; rows "$OUT/mlp.log"
fi
