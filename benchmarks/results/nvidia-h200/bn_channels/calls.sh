# The device calls of training batch norm's Triton reductions (kernels/batch_norm_channels.py),
# each one call of `run` (carry [".whl"]), under 10 minutes:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/bn_channels/calls.sh   # GPU tests, micro-benchmark, kernel profile
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/bn_channels/calls.sh   # ResNet-50 bf16 training step, all backends
#   CALL=3 OUT=... bash benchmarks/results/nvidia-h200/bn_channels/calls.sh   # the whole GPU suite
#   CALL=4 OUT=... bash benchmarks/results/nvidia-h200/bn_channels/calls.sh   # next: the host time of both reductions
#     (README "open question": a cProfile of each ait variant's step, then the layout GPU tests)
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
LOGGED='import logging, runpy, sys
logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)d %(name)s %(message)s")
logging.getLogger("ait_dynamo").setLevel(logging.INFO)
sys.argv = ["benchmarks", *sys.argv[1:]]
runpy.run_module("benchmarks", run_name="__main__")'
case "${CALL:-1}" in
1)  timeout 150 python3 -m pytest -q -rfE -p no:cacheprovider -n 6 tests/test_batch_norm_channels.py tests/test_batch_norm_split.py \
      tests/test_batch_norm_stats.py tests/test_batch_norm.py > "$OUT/gpu_tests_bn.log" 2>&1
    echo "tests rc=$?"; tail -n 4 "$OUT/gpu_tests_bn.log"
    timeout 90 python3 benchmarks/results/nvidia-h200/bn_channels/micro.py > "$OUT/micro.log" 2>&1
    echo "micro rc=$?"; tail -n 3 "$OUT/micro.log"
    timeout 330 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 \
      --backends inductor,ait --out "$OUT/profile" > "$OUT/profile.log" 2>&1
    echo "profile rc=$?"; tail -n 5 "$OUT/profile.log"; head -n 3 "$OUT"/profile/*.txt ;;
2)  timeout 560 python3 -c "$LOGGED" run --suite models --workload tv_resnet50_train --batch 32 --no-plots \
      --out "$OUT/train" --backends eager,inductor,ait,ait+batch_norm_reductions=aten > "$OUT/train.log" 2>&1
    echo "train rc=$?"; grep -E "^\[[0-9]/1\]" "$OUT/train.log" | cut -c1-300; gzip -f "$OUT/train.log" ;;
3)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=330 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
4)  timeout 420 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --host \
      --backends ait,ait+batch_norm_reductions=aten --out "$OUT/host" > "$OUT/host.log" 2>&1
    echo "host rc=$?"; head -n 2 "$OUT"/host/*.txt
    timeout 120 python3 -m pytest -q -rfE -p no:cacheprovider -n 4 tests/test_layout_gpu.py > "$OUT/gpu_tests_layout.log" 2>&1
    echo "layout tests rc=$?"; tail -n 3 "$OUT/gpu_tests_layout.log" ;;
esac
