# Issues 13 and 12: the measurements that would close them, written 2026-12-05. Each CALL is one call of `run` (carry [".whl"]), under 10 minutes.
#   CALL=1 OUT=... bash benchmarks/results/nvidia-h200/cnn_1205/calls.sh   # depthwise GPU tests, then the row-tile probe (../depthwise_rows/: its CALL=1)
#   CALL=2 OUT=... bash benchmarks/results/nvidia-h200/cnn_1205/calls.sh   # the suite's four CNNs, fp16 batch 32, both reduce-overhead modes; ResNet-50 bf16 training
#   CALL=3 OUT=... bash benchmarks/results/nvidia-h200/cnn_1205/calls.sh   # the whole GPU suite (../depthwise_rows/: its CALL=3)
# and issue 12's (host time, default modes, eager / Inductor / ait in one run each, host µs per step and per launch):
#   CALL=4 OUT=... bash benchmarks/results/nvidia-h200/cnn_1205/calls.sh   # the seed workloads
#   CALL=5 OUT=... bash benchmarks/results/nvidia-h200/cnn_1205/calls.sh   # the model suite
# Written 2026-12-05 in a session whose device calls were all refused (no machine could be started,
# then loans paused): none of them has run yet.
# Files back (at most 8 a call): PACK_OVER=1 packs each benchmark run's files but log.txt (which holds
# its printed table) into bench.tar.gz.
set -u
# CALL=1 and CALL=3 are those of ../depthwise_rows/calls.sh (the probe, the whole GPU suite)
case "${CALL:-1}" in
1|3) exec bash benchmarks/results/nvidia-h200/depthwise_rows/calls.sh ;;
esac
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
case "${CALL:-1}" in
2)  timeout 330 python3 -c "$AIT_LOGGED" run --suite models --batch 32 --no-plots --out "$OUT/cnn" \
      --workload tv_resnet50,tv_mobilenet_v3_large,tv_efficientnet_b0,tv_convnext_tiny \
      --backends "inductor-reduce-overhead,ait-cudagraphs" > "$OUT/cnn.log" 2>&1
    echo "cnn rc=$?"; grep -E "^\[[0-9]/4\]" "$OUT/cnn.log" | cut -c1-300; gzip -f "$OUT/cnn.log"
    timeout 230 python3 -c "$AIT_LOGGED" run --suite models --workload tv_resnet50_train --batch 32 --no-plots \
      --out "$OUT/train" --backends inductor,ait > "$OUT/train.log" 2>&1
    echo "train rc=$?"; grep -E "^\[[0-9]/1\]" "$OUT/train.log" | cut -c1-300; gzip -f "$OUT/train.log" ;;
4)  PACK_OVER=1 RUN_BUDGET=200 RUN_LIMIT=260 RUN_ARGS="--workload encoder_block,vit_b16_224 --batch 16 --backends eager,inductor,ait --warm-compile none" \
      OUT=$OUT/seeds bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "seeds rc=$?"
    PACK_OVER=1 RUN_BUDGET=200 RUN_LIMIT=260 RUN_ARGS="--workload encoder_block_train --batch 32 --backends eager,inductor,ait --warm-compile none" \
      OUT=$OUT/train bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "train rc=$?"; cat "$OUT/seeds/log.txt" "$OUT/train/log.txt" | grep -E "^\| (encoder|vit)" | cut -c1-260 ;;
5)  PACK_OVER=1 RUN_BUDGET=470 RUN_LIMIT=540 OUT=$OUT/models RUN_ARGS="--suite models --workload hf_gpt2_train,tv_vit_b_16,hf_bert_base,hf_gpt2,hf_llama_small,tv_efficientnet_b0,tv_mobilenet_v3_large,hf_bert_base_train,tv_resnet50 --backends eager,inductor,ait --warm-compile none" \
      bash benchmarks/device_bench.sh run > /dev/null 2>&1
    echo "models rc=$?"; grep -E "^\| (hf|tv)_" "$OUT/models/log.txt" | cut -c1-260 ;;
esac
