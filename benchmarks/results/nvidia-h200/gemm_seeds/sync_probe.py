"""Does ait's step make the host wait for the GPU? (issue 12: at batch 128 the encoder block's
host time per step, 863 us, was about its kernel time, where Inductor's was 517 us.)

For eager, Inductor and ait, at batches 16, 64 and 128, fp16 inference:
- the host time of one step on an idle GPU, the median of 20 (`benchmarks.measure.host_time`'s
  method), beside the kernel time of one step (CUDA events around a synchronised step);
- then one step under `torch.cuda.set_sync_debug_mode("warn")`, which warns at every CUDA call
  that synchronises with the device; the warnings are printed with the line that made them.

    python benchmarks/results/nvidia-h200/gemm_seeds/sync_probe.py
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
import warnings

import torch

sys.path.insert(0, ".")
from benchmarks.models import EncoderBlock  # noqa: E402


def host_us(fn, x) -> float:
    samples = []
    for _ in range(20):
        torch.cuda.synchronize()
        started = time.perf_counter()
        fn(x)
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def device_us(fn, x) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(20):
        torch.cuda.synchronize()
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3)
    return statistics.median(samples)


def main() -> None:
    torch.manual_seed(0)
    model = EncoderBlock(768, 12, 3072).to("cuda", torch.float16).eval()
    for batch in (16, 64, 128):
        x = torch.randn(batch, 196, 768, device="cuda", dtype=torch.float16)
        for name in ("eager", "inductor", "ait"):
            torch._dynamo.reset()
            fn = model if name == "eager" else torch.compile(model, backend=name)
            with torch.no_grad():
                for _ in range(10):
                    fn(x)
                host, wall = host_us(fn, x), device_us(fn, x)
                torch.cuda.synchronize()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        fn(x)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize()
            print(f"batch {batch} {name}: host {host:.0f} us, one step's events {wall:.0f} us, "
                  f"{len(caught)} synchronising calls", flush=True)
            for warning in caught[:5]:
                print(f"    {warning.filename}:{warning.lineno}: {str(warning.message)[:200]}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - a probe: print what broke and stop
        traceback.print_exc()
