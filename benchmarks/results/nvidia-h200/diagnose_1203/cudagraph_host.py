"""Where ait's CUDA-graph step spends its host time: MobileNetV3-Large took 822 us of host time a
step with one replay at 905ea5f's parent (ResNet-50 272 us, Inductor reduce-overhead 390 us).
Prints the capture log (static and copied inputs), the host time per step, and the top host
functions of 200 steps under cProfile, for ait and Inductor, reduce-overhead, fp16, batch 32.

    python benchmarks/results/nvidia-h200/diagnose_1203/cudagraph_host.py [model ...]
"""
from __future__ import annotations

import cProfile
import io
import logging
import pstats
import statistics
import sys
import time

import torch
import torchvision


def host_us(step, iters: int = 50) -> float:
    samples = []
    for _ in range(iters):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        step()
        samples.append((time.perf_counter() - begin) * 1e6)
    return statistics.median(samples)


def main(names: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("ait_dynamo.cuda_graphs").setLevel(logging.INFO)
    for name in names:
        for backend in ("ait", "inductor"):
            torch._dynamo.reset()
            model = getattr(torchvision.models, name)().cuda().half().eval()
            x = torch.randn(32, 3, 224, 224, device="cuda", dtype=torch.half)
            compiled = torch.compile(model, backend=backend, mode="reduce-overhead")

            def step():
                torch.compiler.cudagraph_mark_step_begin()
                with torch.no_grad():
                    return compiled(x)

            for _ in range(5):
                step()
            print(f"== {name} {backend}: host {host_us(step):.0f} us/step", flush=True)
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(200):
                step()
            profile.disable()
            torch.cuda.synchronize()
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(14)
            print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:4000], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["mobilenet_v3_large", "resnet50"])
