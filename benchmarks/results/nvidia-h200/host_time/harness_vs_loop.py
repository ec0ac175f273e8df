"""Not run yet (written on the CPU machine): why the harness's wall time for ait (0.586 ms at
batch 1) was twice its own host time (0.333 ms) and a plain loop's wall time (0.281 ms).

One process, the encoder block (fp16, batch 1) through eager and ait, each timed five ways:
  loop        CUDA events around each call, the output deleted before the next (plain_loop.py)
  held        the harness's step and timer (measure.time_step), the previous output held
              during the next call, as the step did before this commit
  released    the same, the previous output released before the call (the step now)
  released+p  the same again, after a torch.profiler session (measure.profile_step)
  host        measure.host_time before the profile, and after it

    python benchmarks/results/nvidia-h200/host_time/harness_vs_loop.py     (from the repository root)
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))  # the repository root: benchmarks

from benchmarks.backends import BACKENDS, InferenceStep
from benchmarks.measure import TimingPolicy, host_time, profile_step, time_step
from benchmarks.models import EncoderBlock
from benchmarks.workload_types import Built


class HeldOutputs(InferenceStep):
    def _begin(self) -> None:  # the step before this commit: the previous output stays alive
        pass


def loop_ms(fn, x, iters=300):
    walls = []
    for _ in range(iters):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        begin.record()
        y = fn(x)
        end.record()
        del y
        torch.cuda.synchronize()
        walls.append(begin.elapsed_time(end))
    return statistics.median(walls)


torch.manual_seed(0)
device = torch.device("cuda")
model = EncoderBlock(768, 12, 3072).to(device, torch.half).eval()
x = torch.randn(1, 196, 768, device=device, dtype=torch.half)
built = Built(model, (x,), "inference", "float16", "1x196x768")
policy = TimingPolicy.for_device(device)
for name in ("eager", "ait"):
    fn = model if name == "eager" else BACKENDS["ait"].compile(model, built, {})
    with torch.no_grad():
        for _ in range(20):
            fn(x)
        loop = loop_ms(fn, x)
    held, released = HeldOutputs(fn, built, False), InferenceStep(fn, built, False)
    rows = {"loop": loop, "held": time_step(held, device, policy).median_ms,
            "released": time_step(released, device, policy).median_ms}
    before = host_time(released, device, launches=0.0).enqueue_us
    profile_step(released, device)
    rows["released+p"] = time_step(released, device, policy).median_ms
    after = host_time(released, device, launches=0.0).enqueue_us
    print(f"{name:6s} " + "  ".join(f"{k} {v:.3f} ms" for k, v in rows.items())
          + f"  host before/after profile {before:.0f}/{after:.0f} us  ({time.strftime('%H:%M:%S')})", flush=True)
