# One device call: the whole suite on the GPU, then the wrapper A/B (new LaunchSite wrapper against
# the kernels/ of 4bb37b4) on the host-bound encoder block, in the same run.
set -u
. benchmarks/device_setup.sh $OUT/env.log
timeout ${SUITE_LIMIT:-330} python3 -m pytest -q -rfE -p no:cacheprovider -n 14 tests > $OUT/gpu_tests.log 2>&1
echo "suite rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" $OUT/gpu_tests.log | tail -n 12
timeout 130 python3 -m benchmarks run --workload encoder_block --batch 1,16 --backends eager,inductor,ait --time-budget 110 --no-plots --out $OUT/ab_new > $OUT/ab_new.log 2>&1
echo "new rc=$?"
cp -r .gpu_extra/old/kernels/. kernels/ && cp .gpu_extra/old/ait_dynamo/verify.py ait_dynamo/verify.py && rm -f kernels/launch_site.py
timeout 70 python3 -m benchmarks run --workload encoder_block --batch 1,16 --backends eager,ait --time-budget 55 --no-plots --out $OUT/ab_old > $OUT/ab_old.log 2>&1
echo "old rc=$?"
for d in ab_new ab_old; do echo "== $d"; grep -E "^\| encoder_block \| [0-9]+ \| (eager|inductor|ait) \|" $OUT/$d/results.md; done
