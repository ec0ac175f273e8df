# The device calls that measure the depthwise template's row tiles (issue 13, item 4), each one
# call of `run` (carry [".whl"]), under 10 minutes:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/depthwise_rows/calls.sh   # depthwise GPU tests, then probe.py: each layer, every configuration, against cuDNN and Inductor
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/depthwise_rows/calls.sh   # ConvNeXt-T whole, tuned (template against cuDNN measured), both modes, beside Inductor
#   CALL=3 OUT=... bash benchmarks/results/nvidia-h200/depthwise_rows/calls.sh   # the whole GPU suite
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
1)  timeout 120 python3 -m pytest -q -rfE -p no:cacheprovider -n 4 tests/test_depthwise_conv_gpu.py tests/test_parallel_tuning.py \
      > "$OUT/gpu_tests_depthwise.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/gpu_tests_depthwise.log"
    timeout 380 python3 benchmarks/results/nvidia-h200/depthwise_rows/probe.py --out "$OUT/probe" --budget 300 \
      > "$OUT/probe.log" 2>&1
    echo "probe rc=$?"; cat "$OUT/probe/probe.md" ;;
2)  timeout 560 python3 -c "$AIT_LOGGED" run --suite models --workload tv_convnext_tiny --batch 32 --no-plots --out "$OUT/cnn" \
      --backends "inductor,inductor-reduce-overhead,ait-cudagraphs,ait+autotune=1,ait-cudagraphs+autotune=1" \
      > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\[[0-9]/1\]" "$OUT/cnn.log" | cut -c1-300; grep -E "gemm convolution|autotune" "$OUT/cnn.log" | cut -c1-300 | head -40
    gzip -f "$OUT/cnn.log" ;;
3)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=460 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh  # 330 s reached 96% of 2130 tests on 2026-12-05
    gzip -f "$OUT/t/gpu_tests.log" ;;
esac
