"""Compile a graph's Triton kernels ahead of their first launch, several at a time.

Triton compiles a kernel when it is first launched, one after the other. With static sizes every
launch argument is known at compile time, so ``JITFunction.warmup`` (pointer dtypes and the
actual integer arguments: the same specialisation as the launch) can build the binaries in a
thread pool while the graph is being compiled; ptxas runs as a subprocess, so threads overlap.
The binaries land in Triton's in-memory and on-disk caches; a kernel that fails here is simply
compiled at its launch (or its error surfaces there, through the normal fallback path).
Depthwise template kernels compile here too, at the configuration their launch takes without
``autotune`` (``depthwise.heuristic``); left to their first launch, they compiled one after
the other once the pool was done.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Sequence

from ait_dynamo.kernels import runtime

log = logging.getLogger("ait_dynamo")


def _warm(kernel: Any, spec: Any, kind: str, persistent: bool, column: bool,
          problem: tuple[int, ...] | None = None) -> None:
    dtypes, ints = spec
    if kind == "conv":  # a depthwise template: the configuration its launch takes without autotune
        from ait_dynamo.kernels import depthwise

        config = depthwise.heuristic(problem)
        kernel.warmup(*dtypes, *ints, **depthwise.constexprs(config), num_warps=config[2], grid=(1, 1))
    elif kind == "pointwise":
        xnumel = ints[-1]
        block, warps = runtime.pointwise_config(xnumel)
        kernel.warmup(*dtypes, *ints, XBLOCK=block, num_warps=warps, grid=(1, 1))
    else:
        xnumel, rnumel = ints[-2], ints[-1]
        xblock, rblock, warps = runtime.reduction_config(xnumel, rnumel, persistent, column)
        kernel.warmup(*dtypes, *ints, XBLOCK=xblock, RBLOCK=rblock, num_warps=warps, grid=(1, 1))


def _has_work(kernel: Any) -> bool:
    """Whether the kernel launches at all (an empty iteration space launches nothing)."""
    if kernel.kind == "conv":  # its shape: images, channels, output rows, output columns, ...
        return all(size > 0 for size in kernel.gemm[:4])
    return kernel.warmup[1][-1] > 0


def precompile(module: ModuleType, kernels: Sequence[Any], workers: int) -> int:
    """Warm up the CUDA kernels whose arguments are all static; returns how many compiled."""
    if workers <= 0 or not runtime.triton_runs_on("cuda"):
        return 0
    todo, seen = [], set()
    for k in kernels:  # a kernel shared by several groups compiles once per specialization
        if k.device_type == "cuda" and k.warmup is not None and _has_work(k) and (k.name, k.warmup) not in seen:
            seen.add((k.name, k.warmup))
            todo.append(k)
    if not todo:
        return 0
    done = 0
    with ThreadPoolExecutor(max_workers=min(workers, len(todo)), thread_name_prefix="ait-compile") as pool:
        futures = [
            (k.name, pool.submit(_warm, getattr(module, k.name), k.warmup, k.kind, k.persistent, k.column, k.gemm))
            for k in todo
        ]
        for name, future in futures:
            try:
                future.result()
                done += 1
            except Exception as error:  # noqa: BLE001 - the launch compiles it again and reports
                log.debug("precompiling %s failed (%s); it compiles at its first launch", name, error)
    return done
