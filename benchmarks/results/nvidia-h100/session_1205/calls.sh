# The device calls that follow this folder's measurements (README beside it), each one call of
# `run` (carry [".whl"]), under 10 minutes. The whole GPU suite no longer fits one call (setup,
# the CUTLASS prebuild and 2158 tests: 98% in 460 s at 14 processes on 2026-12-05), so it runs in
# two halves by file name:
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h100/session_1205/calls.sh   # GPU suite, tests/test_[a-k]*.py (about 1080 tests, the CUTLASS ones)
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h100/session_1205/calls.sh   # GPU suite, tests/test_[l-z]*.py (about 1080 tests, OpInfo's)
#   CALL=3 OUT=... bash benchmarks/results/nvidia-h100/session_1205/calls.sh   # host time per wrapper line, ait and Inductor, where ait's step is host-bound (issue 12)
#   CALL=4 OUT=... bash benchmarks/results/nvidia-h100/session_1205/calls.sh   # the four CNNs again, both reduce-overhead modes, with a cProfile of the host (issue 13)
#   CALL=5 OUT=... bash benchmarks/results/nvidia-h100/session_1205/calls.sh   # cold compile of two training steps: Inductor, ait (compile_workers = cores, at most 16), ait with the old 4
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
1)  timeout 100 python3 -c "import sys; sys.path[:0]=['tests','.']; import test_cutlass_gemm_gpu as t; t.prebuild()" > "$OUT/prebuild.log" 2>&1
    echo "prebuild rc=$?"
    OUT=$OUT/t LIMIT=360 RERUN_LIMIT=60 JOBS=14 TESTS="$(ls tests/test_[a-k]*.py | tr '\n' ' ')" bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
2)  OUT=$OUT/t LIMIT=420 RERUN_LIMIT=90 JOBS=14 TESTS="$(ls tests/test_[l-z]*.py | tr '\n' ' ')" bash benchmarks/gpu_tests.sh
    gzip -f "$OUT/t/gpu_tests.log" ;;
3)  timeout 540 python3 -m benchmarks profile --out "$OUT/lines" \
      --workload hf_llama_small,tv_mobilenet_v3_large,tv_resnet50 --backends inductor,ait --lines > "$OUT/lines.log" 2>&1
    echo "lines rc=$?"; grep -E "^== |per call|launch|extern|alloc" "$OUT/lines.log" | cut -c1-220 | head -80
    gzip -f "$OUT/lines.log" ;;
4)  timeout 540 python3 -m benchmarks profile --out "$OUT/ro" --batch 32 \
      --workload tv_resnet50,tv_mobilenet_v3_large --backends inductor-reduce-overhead,ait-cudagraphs --host > "$OUT/ro.log" 2>&1
    echo "ro rc=$?"; grep -E "^== |host|cuda_graphs|replay" "$OUT/ro.log" | cut -c1-220 | head -80
    gzip -f "$OUT/ro.log" ;;
5)  # each run starts from empty Inductor, Triton and ait caches (benchmarks/backends.fresh_caches)
    for backends in inductor,ait ait+compile_workers=4; do
      timeout 260 python3 -m benchmarks run --suite models --workload hf_bert_base_train,hf_gpt2_train --batch 8 \
        --backends "$backends" --warm-compile none --no-plots --out "$OUT/compile_${backends//[,+=]/_}" > "$OUT/compile_${backends//[,+=]/_}.log" 2>&1
      echo "$backends rc=$?"; grep -E "cold|compile" "$OUT/compile_${backends//[,+=]/_}/results.md" | head -12
    done ;;
esac
