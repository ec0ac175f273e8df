# Device calls of the session of 2026-12-05 (d), each one call of `run` (carry [".whl"]):
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h100/session_1205d/calls.sh
#     the depthwise GPU tests after e9cbe77 (the tap rows in a run-time loop), the template against
#     cuDNN on ConvNeXt-T's four 7x7 layers (../../nvidia-h200/depthwise_rows/probe.py --only convnext),
#     then ConvNeXt-T fp16 batch 32 with autotune in both modes beside Inductor's
#   CALL=2 (not run): the model suite in default modes, each compiled backend timed interleaved with eager
#   CALL=3: after CALL=1 showed the template faster than cuDNN on all four 7x7 layers: the depthwise
#     and layout GPU tests with 7x7 layers taking the template by default, then ConvNeXt-T fp16
#     batch 32 in default and reduce-overhead modes beside Inductor's (no autotune)
#   CALL=5 (not run: too little device time left; for the next session, code ec097bc or later):
#     after CALL=3 (the template's group wrote a float32 copy for each LayerNorm): the depthwise,
#     layout, fusion and GEMM-template GPU tests, then ConvNeXt-T as in CALL=3
#   CALL=4 (not run: the device started seldom this session): CALL=3, then the model suite's
#     transformers in default modes interleaved (issue 12), until END (560) seconds
#   CALL=6 (for the next session, where the device starts seldom: one call for both issues):
#     CALL=5, then the model suite's transformers as in CALL=4, until END (560) seconds
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
1)  timeout 110 python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests/test_depthwise_conv_gpu.py tests/test_depthwise_conv.py \
      tests/test_parallel_tuning.py > "$OUT/depthwise_tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/depthwise_tests.log"
    timeout 260 python3 benchmarks/results/nvidia-h200/depthwise_rows/probe.py --out "$OUT/probe" --only convnext \
      --budget 200 > "$OUT/probe.log" 2>&1
    echo "probe rc=$?"; cat "$OUT/probe/probe.md"
    left=$((575 - SECONDS)); [ "$left" -gt 60 ] && timeout $left python3 -m benchmarks run --suite models --batch 32 \
      --no-plots --out "$OUT/cnn" --warm-compile none --workload tv_convnext_tiny \
      --backends "inductor,inductor-reduce-overhead,ait+autotune=1,ait-cudagraphs+autotune=1" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; gzip -f "$OUT/cnn.log" ;;
2)  PACK_OVER=1 RUN_BUDGET=470 RUN_LIMIT=540 OUT=$OUT/models RUN_ARGS="--suite models --interleave --workload hf_gpt2_train,tv_vit_b_16,hf_bert_base,hf_gpt2,hf_llama_small,tv_efficientnet_b0,tv_mobilenet_v3_large,hf_bert_base_train,tv_resnet50 --backends eager,inductor,ait --warm-compile none" \
      bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "models rc=$?"; grep -E "^\| (hf|tv)_" "$OUT/models/log.txt" | cut -c1-260 ;;
3)  timeout 120 python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests/test_depthwise_conv_gpu.py tests/test_depthwise_conv.py \
      tests/test_layout_gpu.py > "$OUT/tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/tests.log"
    timeout 300 python3 -c "$AIT_LOGGED" run --suite models --batch 32 --no-plots --out "$OUT/cnn" --warm-compile none \
      --workload tv_convnext_tiny --backends "inductor,inductor-reduce-overhead,ait,ait-cudagraphs" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; grep -c "7x7" "$OUT/cnn.log"; gzip -f "$OUT/cnn.log" ;;
4|6)  if [ "$CALL" = 4 ]; then CALL=3 bash "$0"; else CALL=5 bash "$0"; fi
    left=$((${END:-560} - SECONDS)); [ "$left" -gt 90 ] && PACK_OVER=1 RUN_BUDGET=$((left - 70)) RUN_LIMIT=$left OUT=$OUT/models \
      RUN_ARGS="--suite models --interleave --workload hf_llama_small,hf_bert_base,hf_gpt2,tv_vit_b_16,hf_gpt2_train,hf_bert_base_train --backends eager,inductor,ait --warm-compile none" \
      bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "models rc=$?"; grep -E "^\| (hf|tv)_" "$OUT/models/log.txt" | cut -c1-260 ;;
5)  timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests/test_depthwise_conv_gpu.py tests/test_depthwise_conv.py \
      tests/test_layout_gpu.py tests/test_fusion_gpu.py tests/test_gemm_template_gpu.py > "$OUT/tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/tests.log"
    timeout 200 python3 -c "$AIT_LOGGED" run --suite models --batch 32 --no-plots --out "$OUT/cnn" --warm-compile none \
      --workload tv_convnext_tiny --backends "inductor,inductor-reduce-overhead,ait,ait-cudagraphs" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; gzip -f "$OUT/cnn.log" ;;
esac
