# The device calls of issue 13's training-peak work (ResNet-50 bf16, batch 32), each one call of
# `run` (carry [".whl"]), under 10 minutes:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/train_peak/calls.sh   # new GPU tests; profile with the memory before and at the peak; ait's plans and modules, Inductor's wrappers
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/train_peak/calls.sh   # the whole GPU suite
#   CALL=3 OUT=... bash benchmarks/results/nvidia-h200/train_peak/calls.sh   # the model suite's ResNet-50 training row: eager, Inductor, ait
#   CALL=4 OUT=... bash benchmarks/results/nvidia-h200/train_peak/calls.sh   # recomputed broadcasts: their GPU tests, the profile of CALL=1
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
1)  timeout 90 python3 -m pytest -q -rfE -p no:cacheprovider -n 8 tests/test_batch_norm_channels.py tests/test_launch_site.py \
      tests/test_plan_memory.py > "$OUT/gpu_tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/gpu_tests.log"
    timeout 200 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --memory \
      --backends inductor,ait --out "$OUT/profile" > "$OUT/profile.log" 2>&1
    echo "profile rc=$?"; head -n 2 "$OUT"/profile/*.txt; grep -h "allocated before\|peak of the step" "$OUT"/profile/*.txt
    mkdir -p "$OUT/code"
    for name in $(grep -ho "[a-z0-9]\{52\}\.py" "$OUT"/profile/tv_resnet50_train_inductor.txt | sort -u); do
      find /tmp/torchinductor_* -name "$name" -exec cp {} "$OUT/code/" \; 2>/dev/null
    done
    find "$OUT/profile/ait_debug" -name plan.txt | while read -r plan; do
      cp "$plan" "$OUT/code/ait_$(basename "$(dirname "$plan")")_plan.txt"; done
    find "$OUT/profile/ait_debug" -name module.py | while read -r module; do
      cp "$module" "$OUT/code/ait_$(basename "$(dirname "$module")")_module.py"; done
    grep -h "^peak" "$OUT"/code/*plan.txt
    rm -rf "$OUT/profile/ait_debug"; mv "$OUT"/profile/*.txt "$OUT/code/"
    # the device tool brings back a few files only: one archive
    tar czf "$OUT/profile_code.tgz" -C "$OUT" code profile && rm -rf "$OUT/code" "$OUT/profile" ;;
2)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=330 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
3)  timeout 330 python3 -m benchmarks run --suite models --workload tv_resnet50_train --batch 32 --no-plots \
      --out "$OUT/train" --backends eager,inductor,ait > "$OUT/train.log" 2>&1
    echo "train rc=$?"; grep -E "^\[[0-9]/1\]" "$OUT/train.log" | cut -c1-300; gzip -f "$OUT/train.log" ;;
4)  timeout 60 python3 -m pytest -q -rfE -p no:cacheprovider -n 8 tests/test_recompute_broadcasts.py \
      tests/test_memory_schedule.py tests/test_plan_memory.py > "$OUT/gpu_tests.log" 2>&1
    echo "tests rc=$?"; tail -n 3 "$OUT/gpu_tests.log"
    timeout 170 python3 -m benchmarks profile --workload tv_resnet50_train --batch 32 --memory \
      --backends inductor,ait --out "$OUT/profile" > "$OUT/profile.log" 2>&1
    echo "profile rc=$?"; head -n 2 "$OUT"/profile/*.txt; grep -h "allocated before\|peak of the step" "$OUT"/profile/*.txt
    find "$OUT/profile/ait_debug" -name plan.txt | while read -r plan; do
      cp "$plan" "$OUT/profile/ait_$(basename "$(dirname "$plan")")_plan.txt"; done
    grep -h "^peak" "$OUT"/profile/*plan.txt; rm -rf "$OUT/profile/ait_debug"
    tar czf "$OUT/profile.tgz" -C "$OUT" profile && rm -rf "$OUT/profile" ;;
esac
