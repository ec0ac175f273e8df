#!/usr/bin/env bash
# Profile on the device: per-kernel times and the memory peak (benchmarks/profile_gpu.py).
# Writes under ${OUT:-/tmp/ait_profile}: profile.log and profile.tar.gz (the per-workload reports and
# ait's debug dumps). ONLY= and BACKENDS= narrow the run.
set -u
OUT=${OUT:-/tmp/ait_profile}
mkdir -p "$OUT/profile"
python3 -c "import ait_dynamo.partitioners" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee "$OUT/profile.log"
timeout "${LIMIT:-500}" python3 -m benchmarks.profile_gpu --out "$OUT/profile" --memory ${HOST:+--host} \
  --only "${ONLY:-tutorial_8192,layer_norm_32768x768_float16,softmax_32768x768_float16,pointwise_chain_fwd,encoder_block,vit_b16}" \
  --backends "${BACKENDS:-eager,inductor,ait}" >> "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"
tar czf "$OUT/profile.tar.gz" -C "$OUT" profile && rm -rf "$OUT/profile"
tail -c 3000 "$OUT/profile.log"
