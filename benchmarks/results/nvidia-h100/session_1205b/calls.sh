# Device calls of the session of 2026-12-05 (b), each one call of `run` (carry [".whl"]):
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h100/session_1205b/calls.sh
#     (run) the GPU tests of the changed modules (host scalars, layout, batch norm), then ResNet-50
#     and ConvNeXt-T fp16 batch 32 in default and reduce-overhead modes, Inductor beside ait
#     (MobileNetV3-L and EfficientNet-B0: the same command with their names, the next call)
# For the next session (not run yet):
#   CALL=2, CALL=3: the whole GPU suite in two halves. At 0c953ff the first half of
#     ../session_1205/calls.sh (tests/test_[a-k]*.py, CUTLASS prebuild first) ran out of its 360 s
#     in the two depthwise files; here they go with the second half (1175 tests in 110 s there).
#   CALL=4: the model suite in default modes, each compiled backend timed interleaved with eager
#     (--interleave), for issue 12's host-bound rows
#   CALL=5: the depthwise row tiles against cuDNN, layer by layer (../../nvidia-h200/depthwise_rows/
#     CALL=1): ConvNeXt-T's 18 7x7 depthwise convolutions are its largest kernel cost
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
first_half=$(ls tests/test_[a-k]*.py | grep -v depthwise | tr '\n' ' ')
second_half="$(ls tests/test_[l-z]*.py | tr '\n' ' ') tests/test_depthwise_conv.py tests/test_depthwise_conv_gpu.py"
case "${CALL:-1}" in
1)  timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests/test_dynamic_shapes.py tests/test_host_scalars.py \
      tests/test_layout.py tests/test_layout_gpu.py tests/test_batch_norm.py tests/test_batch_norm_channels.py > "$OUT/tests.log" 2>&1
    echo "tests rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/tests.log" | tail -8
    timeout 300 python3 -m benchmarks run --suite models --batch 32 --no-plots --out "$OUT/cnn" --warm-compile none \
      --workload tv_resnet50,tv_convnext_tiny --backends "eager,inductor,ait,inductor-reduce-overhead,ait-cudagraphs" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; gzip -f "$OUT/cnn.log" ;;
2)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=400 RERUN_LIMIT=60 JOBS=14 TESTS="$first_half" bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
3)  OUT=$OUT/t LIMIT=420 RERUN_LIMIT=90 JOBS=14 TESTS="$second_half" bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
4)  PACK_OVER=1 RUN_BUDGET=470 RUN_LIMIT=540 OUT=$OUT/models RUN_ARGS="--suite models --interleave --workload hf_gpt2_train,tv_vit_b_16,hf_bert_base,hf_gpt2,hf_llama_small,tv_efficientnet_b0,tv_mobilenet_v3_large,hf_bert_base_train,tv_resnet50 --backends eager,inductor,ait --warm-compile none" \
      bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "models rc=$?"; grep -E "^\| (hf|tv)_" "$OUT/models/log.txt" | cut -c1-260 ;;
5)  CALL=1 exec bash benchmarks/results/nvidia-h200/depthwise_rows/calls.sh ;;
esac
