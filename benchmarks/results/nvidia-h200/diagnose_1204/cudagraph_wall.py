"""Where a CUDA-graph step's wall time goes beyond its kernel time (issue 13: ait reduce-overhead
against Inductor's on MobileNetV3 and ResNet-50, kernel time lower, wall time higher at 65efbd7).

For each model and backend (reduce-overhead, fp16, batch 32, inference) it prints:
  wall      median ms per step, synchronised after each step (the harness's measure)
  stream    ms per step of 100 steps issued back to back (what the GPU needs per step)
  host      median us of host time per step, from an idle queue
and, from one torch.profiler trace of 20 synchronised steps, medians per step of:
  pre       us from the step's start (host) to the graph launch call
  launch    us the graph launch call itself takes on the host
  to_first  us from the launch call's start to the first kernel's start on the GPU
  span      us from the first kernel's start to the last kernel's end
  kernels   us of kernel time (sum of durations) and the kernel count
  gaps      span - kernels: idle time between the graph's kernels

    python benchmarks/results/nvidia-h200/diagnose_1204/cudagraph_wall.py [model ...]
"""
from __future__ import annotations

import statistics
import sys
import time

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile, record_function


def wall_ms(step, iters: int = 50) -> float:
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def stream_ms(step, iters: int = 100) -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def host_us(step, iters: int = 50) -> float:
    samples = []
    for _ in range(iters):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        step()
        samples.append((time.perf_counter() - begin) * 1e6)
    return statistics.median(samples)


def trace_breakdown(step, steps: int = 20) -> dict[str, float]:
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            torch.cuda.synchronize()
            with record_function("diag_step"):
                step()
            torch.cuda.synchronize()
    events = list(prof.events())
    marks = sorted((e for e in events if e.name == "diag_step" and e.device_type.name == "CPU"),
                   key=lambda e: e.time_range.start)
    launches = sorted((e for e in events if e.name in ("cudaGraphLaunch", "cudaGraphLaunch_v10000")),
                      key=lambda e: e.time_range.start)
    kernels = sorted((e for e in events if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    rows: dict[str, list[float]] = {k: [] for k in ("pre", "launch", "to_first", "span", "kernels", "count", "gaps")}
    for index, mark in enumerate(marks):
        begin = mark.time_range.start
        until = marks[index + 1].time_range.start if index + 1 < len(marks) else float("inf")
        mine = [k for k in kernels if begin <= k.time_range.start < until]
        graph = [g for g in launches if begin <= g.time_range.start < until]
        if not mine:
            continue
        first, last = mine[0].time_range.start, max(k.time_range.end for k in mine)
        busy = sum(k.time_range.end - k.time_range.start for k in mine)
        if graph:
            rows["pre"].append(graph[0].time_range.start - begin)
            rows["launch"].append(sum(g.time_range.end - g.time_range.start for g in graph))
            rows["to_first"].append(first - graph[0].time_range.start)
        rows["span"].append(last - first)
        rows["kernels"].append(busy)
        rows["count"].append(len(mine))
        rows["gaps"].append(last - first - busy)
    return {k: statistics.median(v) for k, v in rows.items() if v}


def main(names: list[str]) -> None:
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

            for _ in range(10):
                step()
            torch.cuda.synchronize()
            figures = (f"wall {wall_ms(step):.3f} ms  stream {stream_ms(step):.3f} ms  "
                       f"host {host_us(step):.0f} us")
            breakdown = trace_breakdown(step)
            print(f"== {name} {backend}-RO: {figures}  " +
                  "  ".join(f"{k} {v:.1f}" for k, v in breakdown.items()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["mobilenet_v3_large", "resnet50", "convnext_tiny"])
