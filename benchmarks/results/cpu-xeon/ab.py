"""Eager against compiled variants of one model, timed interleaved in one process with the
benchmarks' own ``benchmarks.measure.time_interleaved`` (the CPU main job's timing): each
variant's median time, and the median over rounds of eager's round time over its own."""

from __future__ import annotations

import statistics
import sys
from typing import Any, Callable

import torch

sys.path.insert(0, ".")
from benchmarks.measure import TimingPolicy, time_interleaved  # noqa: E402


class _Call:
    phases = ("forward",)

    def __init__(self, fn: Callable[[Any], Any], x: Any):
        self.fn, self.x = fn, x

    def run(self, mark: Callable[[], None]) -> None:
        self.fn(self.x)
        mark()


def compare(label: str, fns: dict[str, Callable[[Any], Any]], x: Any) -> None:
    """``fns`` starts with eager; prints one line: each one's ms and eager / it."""
    cpu = torch.device("cpu")
    with torch.no_grad():
        timings = time_interleaved([_Call(fn, x) for fn in fns.values()], cpu,
                                   TimingPolicy(warmup_s=0.2, measure_s=2.0, min_rounds=30, max_iters=2000))
    eager = timings[0].round_ms
    print(label, " ".join(f"{name} {t.median_ms:.3f} ms ({statistics.median(e / r for e, r in zip(eager, t.round_ms)):.3f})"
                          for name, t in zip(fns, timings)), flush=True)
