# Device calls of the session of 2026-12-06, each one call of `run` (carry [".whl"]):
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h100/session_1206/calls.sh
#     the column tiling against the pixel one and cuDNN on ConvNeXt-T's four 7x7 layers
#     (probe_columns.py), ConvNeXt-T fp16 batch 32 in both modes beside Inductor with ait's INFO
#     log (the heuristic taking column groups for 7x7 kernels), the depthwise, layout, fusion and
#     GEMM-template GPU tests (the column tiling, the widening-cast rule of 76f8788 and the
#     precompiled template kernels of ec097bc had not run on a GPU), then, time left, the model
#     suite's transformers in default modes interleaved (issue 12), all within END (default 560) s
#   CALL=2 (not run: the session's device time was spent): the whole GPU suite in one call,
#     CUTLASS's test kernels prebuilt, then every test file (benchmarks/gpu_tests.sh, 14
#     processes) until 540 s, the failures rerun alone
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
1)  timeout 190 python3 benchmarks/results/nvidia-h100/session_1206/probe_columns.py --out "$OUT/probe" > "$OUT/probe.log" 2>&1
    echo "probe rc=$?"; cat "$OUT/probe/probe.md" 2>/dev/null || cut -c1-400 "$OUT/probe.log"
    timeout 190 python3 -c "$AIT_LOGGED" run --suite models --batch 32 --no-plots --out "$OUT/cnn" --warm-compile none \
      --workload tv_convnext_tiny --backends "inductor,inductor-reduce-overhead,ait,ait-cudagraphs" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\| tv_" "$OUT/cnn/results.md" | cut -c1-300; gzip -f "$OUT/cnn.log"
    left=$((${END:-560} - 10 - SECONDS)); [ "$left" -gt 150 ] && left=150
    [ "$left" -gt 30 ] && timeout $left python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests/test_depthwise_conv_gpu.py \
      tests/test_depthwise_conv.py tests/test_layout_gpu.py tests/test_fusion_gpu.py tests/test_gemm_template_gpu.py > "$OUT/tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/tests.log"
    left=$((${END:-560} - SECONDS)); [ "$left" -gt 90 ] && PACK_OVER=1 RUN_BUDGET=$((left - 70)) RUN_LIMIT=$left OUT=$OUT/models \
      RUN_ARGS="--suite models --interleave --workload hf_llama_small,hf_bert_base,hf_gpt2,tv_vit_b_16,hf_gpt2_train,hf_bert_base_train --backends eager,inductor,ait --warm-compile none" \
      bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "models rc=$?"; grep -E "^\| (hf|tv)_" "$OUT/models/log.txt" 2>/dev/null | cut -c1-260 ;;
2)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=$((540 - SECONDS)) RERUN_LIMIT=30 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
esac
