# Device calls of the session of 2026-12-05 (c), each one call of `run` (carry [".whl"]):
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h100/session_1205c/calls.sh
#     the GPU suite's second half (tests/test_[l-z]*.py and the two depthwise files; 183 s at
#     0c953ff), then the depthwise row tiles against cuDNN layer by layer
#     (../../nvidia-h200/depthwise_rows/probe.py; ConvNeXt-T's 7x7 layers come first)
#   CALL=2: the GPU suite's first half (CUTLASS prebuild first) and the one depthwise test CALL=1
#     did not reach, then ConvNeXt-T fp16 batch 32 in default and reduce-overhead modes, Inductor
#     beside ait, in what is left of the call
#   CALL=3: the model suite in default modes, each compiled backend timed interleaved with eager
#     (not run: no device time left)
# For the next session (not run yet):
#   CALL=4: the depthwise GPU tests, then the depthwise template with its tap rows in a run-time
#     loop (e9cbe77: no configuration spills any more) against cuDNN on ConvNeXt-T's four 7x7 layers, then ConvNeXt-T with
#     autotune (the template measured against cuDNN per layer) in both modes beside Inductor's
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
first_half=$(ls tests/test_[a-k]*.py | grep -v depthwise | tr '\n' ' ')
second_half="$(ls tests/test_[l-z]*.py | tr '\n' ' ') tests/test_depthwise_conv.py tests/test_depthwise_conv_gpu.py"
case "${CALL:-1}" in
1)  OUT=$OUT/t LIMIT=260 RERUN_LIMIT=40 JOBS=14 TESTS="$second_half" bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log"
    timeout 250 python3 benchmarks/results/nvidia-h200/depthwise_rows/probe.py --out "$OUT/probe" --budget 190 \
      > "$OUT/probe.log" 2>&1
    echo "probe rc=$?"; cat "$OUT/probe/probe.md" ;;
2)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=380 RERUN_LIMIT=40 JOBS=14 \
      TESTS="$first_half tests/test_depthwise_conv_gpu.py::test_every_candidate_configuration_computes_what_eager_does[7x7-ragged]" \
      bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log"
    left=$((575 - SECONDS)); [ "$left" -gt 30 ] && timeout $left python3 -m benchmarks run --suite models --batch 32 --no-plots --out "$OUT/cnn" --warm-compile none \
      --workload tv_convnext_tiny --backends "eager,inductor,ait,inductor-reduce-overhead,ait-cudagraphs" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; gzip -f "$OUT/cnn.log" ;;
3)  PACK_OVER=1 RUN_BUDGET=470 RUN_LIMIT=540 OUT=$OUT/models RUN_ARGS="--suite models --interleave --workload hf_gpt2_train,tv_vit_b_16,hf_bert_base,hf_gpt2,hf_llama_small,tv_efficientnet_b0,tv_mobilenet_v3_large,hf_bert_base_train,tv_resnet50 --backends eager,inductor,ait --warm-compile none" \
      bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "models rc=$?"; grep -E "^\| (hf|tv)_" "$OUT/models/log.txt" | cut -c1-260 ;;
4)  timeout 110 python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests/test_depthwise_conv_gpu.py tests/test_depthwise_conv.py \
      tests/test_parallel_tuning.py > "$OUT/depthwise_tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/depthwise_tests.log"
    timeout 260 python3 benchmarks/results/nvidia-h200/depthwise_rows/probe.py --out "$OUT/probe" --only convnext \
      --budget 200 > "$OUT/probe.log" 2>&1
    echo "probe rc=$?"; cat "$OUT/probe/probe.md"
    left=$((575 - SECONDS)); [ "$left" -gt 60 ] && timeout $left python3 -m benchmarks run --suite models --batch 32 \
      --no-plots --out "$OUT/cnn" --warm-compile none --workload tv_convnext_tiny \
      --backends "inductor,inductor-reduce-overhead,ait+autotune=1,ait-cudagraphs+autotune=1" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; gzip -f "$OUT/cnn.log" ;;
esac
