"""The main job: compile the seed workloads with ait, check them against eager, time both.

    python -m benchmarks.run [--workload simple_mlp,encoder_block] [--device cpu|cuda] [--iters N]

On a CPU-only machine it runs small shapes so that it finishes in well under a minute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ait_dynamo import metrics
from benchmarks.models import EncoderBlock, SimpleMLP


@dataclass
class Workload:
    name: str
    build: Callable[[torch.device, torch.dtype], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]


def _simple_mlp(device: torch.device, dtype: torch.dtype):
    batch, hidden = (1024, 512) if device.type == "cuda" else (256, 256)
    model = SimpleMLP(hidden).to(device, dtype).eval()
    return model, (torch.randn(batch, hidden, device=device, dtype=dtype),)


def _encoder_block(device: torch.device, dtype: torch.dtype):
    batch, seq, dim, heads, ff = (32, 196, 768, 12, 3072) if device.type == "cuda" else (8, 64, 256, 8, 1024)
    model = EncoderBlock(dim, heads, ff).to(device, dtype).eval()
    return model, (torch.randn(batch, seq, dim, device=device, dtype=dtype),)


WORKLOADS = {w.name: w for w in (Workload("simple_mlp", _simple_mlp), Workload("encoder_block", _encoder_block))}


def _time(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    """Median milliseconds per call, after warm-up (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    rows = []
    for name in args.workload.split(","):
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
        torch.manual_seed(0)
        model, inputs = WORKLOADS[name].build(device, dtype)
        torch._dynamo.reset()
        metrics.reset()
        compiled = torch.compile(model, backend="ait")
        with torch.no_grad():
            begin = time.perf_counter()
            actual = compiled(*inputs)
            compile_s = time.perf_counter() - begin
            expected = model(*inputs)
            tolerance = 1e-2 if dtype != torch.float32 else 1e-4
            torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)
            eager_ms = _time(lambda: model(*inputs), device, args.iters)
            ait_ms = _time(lambda: compiled(*inputs), device, args.iters)
        rows.append((name, str(tuple(inputs[0].shape)), str(dtype).replace("torch.", ""), eager_ms, ait_ms, compile_s,
                     metrics.generated_kernels, metrics.extern_calls))
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print("| workload | input | dtype | eager ms | ait ms | speedup | compile s | kernels | externs | check |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, shape, dt, eager_ms, ait_ms, compile_s, kernels, externs in rows:
        print(f"| {name} | {shape} | {dt} | {eager_ms:.3f} | {ait_ms:.3f} | {eager_ms / ait_ms:.2f}x | "
              f"{compile_s:.2f} | {kernels} | {externs} | ok |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
