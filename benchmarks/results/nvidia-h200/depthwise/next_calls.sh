# Issue 13 item 4 (the depthwise template) and the GPU suite that issue 14's closing needs, as two
# device calls of `run` (carry [".whl"]), each under 10 minutes and eight files back:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/depthwise/next_calls.sh   # the suite
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/depthwise/next_calls.sh   # depthwise, alone and in CNNs
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
if [ "${CALL:-1}" = 1 ]; then
  # the whole suite (CUTLASS kernels built first, in one process); took 220-250 s with 14 processes
  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
  echo "prebuild rc=$?"
  OUT=$OUT/t LIMIT=330 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh
  gzip -f "$OUT/t/gpu_tests.log"
else
  # the depthwise layers alone: cuDNN + ait's epilogue kernel, Inductor, the template, the measured choice
  timeout 150 python3 -m benchmarks micro --families depthwise --out "$OUT/dw" \
    --backends "eager,inductor,ait,ait+gemm_backends=triton,ait+autotune=1" > "$OUT/micro_depthwise.log" 2>&1
  echo "micro rc=$?"; grep -E "^\| depthwise" "$OUT/dw/micro.md" | cut -c1-300
  # the CNNs whole: does the measured choice pay in the model (fp16 inference, batch 32)?
  timeout 400 python3 -m benchmarks run --suite models --workload tv_mobilenet_v3_large,tv_efficientnet_b0,tv_convnext_tiny \
    --batch 32 --backends "eager,inductor,ait,ait+autotune=1" --no-plots --out "$OUT/cnn" > "$OUT/cnn.log" 2>&1
  echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | head -n 12 | cut -c1-300
fi
