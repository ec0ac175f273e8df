# The CNNs with the depthwise template measured against cuDNN (autotune=1) after 9c17fe4 compiles
# the candidates in parallel; ait's INFO log (every candidate's time, each template-vs-cuDNN
# decision) with millisecond stamps. One device call: `OUT=... bash .../call3.sh` (carry [".whl"]).
set -u
. benchmarks/device_setup.sh "$OUT/setup.log" > /dev/null
export PYTHONPATH=.:/tmp/site
LOGGED='import logging, runpy, sys
logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)d %(name)s %(message)s")
logging.getLogger("ait_dynamo").setLevel(logging.INFO)
sys.argv = ["benchmarks", *sys.argv[1:]]
runpy.run_module("benchmarks", run_name="__main__")'
timeout 470 python3 -c "$LOGGED" run --suite models --workload tv_convnext_tiny,tv_efficientnet_b0,tv_mobilenet_v3_large \
  --batch 32 --backends "inductor,ait,ait+autotune=1" --no-plots --out "$OUT/cnn" > "$OUT/cnn.log" 2>&1
echo "cnn rc=$?"; grep -E "^\[[0-9]/3\]" "$OUT/cnn.log" | cut -c1-300
gzip -f "$OUT/cnn.log"
