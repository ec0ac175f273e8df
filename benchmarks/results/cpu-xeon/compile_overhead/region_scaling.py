"""Does Dynamo's per-call cost grow with the work inside the compiled region? (issue 12)

The same ATen calls as ait's generated body for the main job's simple_mlp, run as a plain
function and under Dynamo (eager backend); a one-op function on a one-element tensor the same two
ways (the fixed cost); and the plain body after walking 4 MB of memory (what a cache flush costs
it). Median µs a call over 15 interleaved rounds of 20 calls. From the repository root:

    python benchmarks/results/cpu-xeon/compile_overhead/region_scaling.py
    OMP_NUM_THREADS=1 python benchmarks/results/cpu-xeon/compile_overhead/region_scaling.py
"""

import os
import statistics
import sys
import timeit

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compiled_region import generated_body as body, x  # noqa: E402  (the body of ait's wrapper for simple_mlp)


def one_op(t: torch.Tensor) -> torch.Tensor:
    return t + 1


junk = torch.empty(4 << 20, dtype=torch.uint8)


def body_after_walk(x: torch.Tensor) -> torch.Tensor:
    junk.add_(1)
    return body(x)


def walk_alone(x: torch.Tensor) -> None:
    junk.add_(1)


tiny = torch.ones(1)
compiled_body, compiled_one_op = torch.compile(body, backend="eager"), torch.compile(one_op, backend="eager")
variants = {
    "body": lambda: body(x),
    "body under Dynamo": lambda: compiled_body(x),
    "one op": lambda: one_op(tiny),
    "one op under Dynamo": lambda: compiled_one_op(tiny),
    "body after a 4 MB walk": lambda: body_after_walk(x),
    "4 MB walk alone": lambda: walk_alone(x),
}
with torch.no_grad():
    for f in variants.values():
        for _ in range(10):
            f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(15):
        for name, f in variants.items():
            times[name].append(timeit.timeit(f, number=20) / 20 * 1e6)
    for name, values in times.items():
        print(f"{name:24s} {statistics.median(values):8.1f} us")
