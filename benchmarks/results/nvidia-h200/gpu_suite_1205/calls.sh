# The device calls that follow up the GPU suite of 2026-12-05 (README beside it), each one call of
# `run` (carry [".whl"]), under 10 minutes:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/gpu_suite_1205/calls.sh   # the 8 failures, with Dynamo's recompile reasons
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/gpu_suite_1205/calls.sh   # the whole GPU suite, with room to finish
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
FAILED="tests/test_attention.py::test_masks_of_fewer_dims_than_the_scores tests/test_attention.py::test_masks_not_contiguous_over_the_keys_are_written_out
 tests/test_dynamic_shapes.py tests/test_fusion_planner.py::test_work_after_a_strided_pool_over_symbolic_spatial_sizes_is_fused"
case "${CALL:-1}" in
1)  # which guard fails on CUDA (under dynamic=True each of 3 sizes compiled its own graph; on the CPU one serves all)
    TORCH_LOGS=recompiles,guards timeout 300 python3 -m pytest -q -rfE -p no:cacheprovider $FAILED > "$OUT/failed_rerun.log" 2>&1
    echo "rerun rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/failed_rerun.log" | tail -12
    grep -iE -A6 "recompil" "$OUT/failed_rerun.log" | grep -vE "^\s*$" | head -60; gzip -f "$OUT/failed_rerun.log" ;;
2)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=460 RERUN_LIMIT=60 JOBS=14 bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
esac
