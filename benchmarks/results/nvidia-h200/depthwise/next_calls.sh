# The device calls that follow 16f26d8 (issue 13 item 4 and issue 14's last check), each one call
# of `run` (carry [".whl"]), under 10 minutes and eight files back. The calls of 27506ff that
# produced this folder's results are this file at that commit.
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/depthwise/next_calls.sh   # the whole GPU suite
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/depthwise/next_calls.sh   # ViT-B with tuning, after 9fd8053
#   CALL=3 / CALL=4 OUT=... bash benchmarks/results/nvidia-h200/depthwise/next_calls.sh   # two CNNs each, tuned, both modes
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
LOGGED='import logging, runpy, sys
logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)d %(name)s %(message)s")
logging.getLogger("ait_dynamo").setLevel(logging.INFO)
sys.argv = ["benchmarks", *sys.argv[1:]]
runpy.run_module("benchmarks", run_name="__main__")'
case "${CALL:-1}" in
1)  # the suite (CUTLASS kernels built first, in one process); 192 s with 14 processes at 27506ff
    timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=330 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
2)  # does timing the template through its launch site (9fd8053) change ViT-B's decisions and time?
    timeout 520 python3 -c "$LOGGED" run --workload vit_b16_224 --batch 128 --no-plots --out "$OUT/vit" \
      --backends "inductor,ait,ait+autotune=1" > "$OUT/vit.log" 2>&1
    echo "vit rc=$?"; grep -E "^\[[0-9]/" "$OUT/vit.log" | cut -c1-300; gzip -f "$OUT/vit.log" ;;
3|4)  # the CNNs: decisions, kernel time, compile time with tuning after 9fd8053 / 16f26d8, and under
    # CUDA graphs (fa65fc5: GPU time alone decides), against Inductor in both modes (issue 13's targets)
    if [ "$CALL" = 3 ]; then MODELS=tv_mobilenet_v3_large,tv_efficientnet_b0; else MODELS=tv_convnext_tiny,tv_resnet50; fi
    timeout 540 python3 -c "$LOGGED" run --suite models --workload "$MODELS" --batch 32 --no-plots --out "$OUT/cnn" \
      --backends "inductor,inductor-reduce-overhead,ait+autotune=1,ait-cudagraphs+autotune=1" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\[[0-9]/2\]" "$OUT/cnn.log" | cut -c1-300; gzip -f "$OUT/cnn.log" ;;
esac
