# The device calls of issue 13's ReLU-backward fold into the batch-norm gradient sums, each one call
# of `run` (carry [".whl"]), under 10 minutes:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/bn_relu_fold/calls.sh   # batch-norm GPU tests, ResNet-50 training profile (kernels, memory at the peak), ait's generated modules
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/bn_relu_fold/calls.sh   # ResNet-50 bf16 training step, all backends
#   CALL=3 OUT=... bash benchmarks/results/nvidia-h200/bn_relu_fold/calls.sh   # the whole GPU suite
#   CALL=4 OUT=... bash benchmarks/results/nvidia-h200/bn_relu_fold/calls.sh   # host time per wrapper line, ait and Inductor
#   CALL=5 OUT=... bash benchmarks/results/nvidia-h200/bn_relu_fold/calls.sh   # the whole GPU suite, then the profile of CALL=1 with the host lines
#   CALL=6 OUT=... bash benchmarks/results/nvidia-h200/bn_relu_fold/calls.sh   # max pool's int8 offsets: their GPU tests, the profile of CALL=1
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
1)  timeout 200 python3 -m pytest -q -rfE -p no:cacheprovider -n 6 tests/test_batch_norm_channels.py tests/test_batch_norm_split.py \
      tests/test_batch_norm_stats.py tests/test_batch_norm.py tests/test_layout.py tests/test_layout_gpu.py > "$OUT/gpu_tests_bn.log" 2>&1
    echo "tests rc=$?"; tail -n 4 "$OUT/gpu_tests_bn.log"
    timeout 380 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --memory \
      --backends inductor,ait --out "$OUT/profile" > "$OUT/profile.log" 2>&1
    echo "profile rc=$?"; tail -n 3 "$OUT/profile.log"; head -n 3 "$OUT"/profile/*.txt
    tar czf "$OUT/ait_debug.tgz" -C "$OUT/profile" ait_debug && rm -rf "$OUT/profile/ait_debug" ;;
2)  timeout 560 python3 -m benchmarks run --suite models --workload tv_resnet50_train --batch 32 --no-plots \
      --out "$OUT/train" --backends eager,inductor,ait > "$OUT/train.log" 2>&1
    echo "train rc=$?"; grep -E "^\[[0-9]/1\]" "$OUT/train.log" | cut -c1-300; gzip -f "$OUT/train.log" ;;
3)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=330 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
4)  timeout 500 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --lines \
      --backends inductor,ait --out "$OUT/lines" > "$OUT/lines.log" 2>&1
    echo "lines rc=$?"; head -n 2 "$OUT"/lines/*.txt; rm -rf "$OUT/lines/ait_debug" ;;
5)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=300 RERUN_LIMIT=40 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log"
    timeout 170 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --memory --lines \
      --backends inductor,ait --out "$OUT/profile" > "$OUT/profile.log" 2>&1
    echo "profile rc=$?"; head -n 2 "$OUT"/profile/*.txt; rm -rf "$OUT/profile/ait_debug" ;;
6)  timeout 70 python3 -m pytest -q -rfE -p no:cacheprovider -n 8 tests/test_max_pool.py tests/test_layout_gpu.py \
      > "$OUT/gpu_tests_pool.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/gpu_tests_pool.log"
    timeout 140 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --memory \
      --backends inductor,ait --out "$OUT/profile" > "$OUT/profile.log" 2>&1
    echo "profile rc=$?"; head -n 2 "$OUT"/profile/*.txt; grep -h "allocated before" "$OUT"/profile/*.txt
    grep -h "max_pool\|offsets_backward" "$OUT"/profile/*.txt | cut -c1-140; rm -rf "$OUT/profile/ait_debug" ;;
esac
