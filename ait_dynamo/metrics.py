"""Counters that tests and benchmarks read: what got compiled, fused, run through ATen, fell back.

Usage::

    from ait_dynamo import metrics
    metrics.reset()
    ...
    assert metrics.generated_kernels == 1
    print(metrics.compiled_graphs[-1].externs)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class GraphRecord:
    """One compiled graph: which kernels were generated and which aten ops ran through torch."""

    name: str
    kind: str  # "forward" | "backward" | "inference" | "graph"
    kernels: list[str] = field(default_factory=list)
    externs: list[str] = field(default_factory=list)  # aten ops through torch, and our reduction kernels' entry points
    fused_ops: list[str] = field(default_factory=list)  # aten ops computed inside the kernels
    refused: dict[str, str] = field(default_factory=dict)  # node name → why it was not fused
    fallback_reason: str | None = None  # compiling failed: the graph ran through ATen, with one warning
    aten_reason: str | None = None  # the graph ran through ATen by design (sizes that cannot be trusted)
    rewrites: list[str] = field(default_factory=list)  # what rewrites before AOTAutograd did (attention → SDPA)
    verified: list[str] = field(default_factory=list)  # kernels the numerics guard found in agreement
    verify_failures: dict[str, str] = field(default_factory=dict)  # kernel → how it differed from ATen
    layout: str = ""  # "channels-last: why" | "contiguous: why" (passes/layout.py)
    layout_copies: list[str] = field(default_factory=list)  # copies that change a 4-d value's memory order
    weight_copies: list[str] = field(default_factory=list)  # parameters copied to NHWC for convolutions
    convolutions: tuple[int, int] = (0, 0)  # (2-D convolutions, those reading channels-last activations)
    cache_hit: bool = False
    compile_seconds: float = 0.0


graphs_compiled: int = 0
generated_kernels: int = 0
extern_calls: int = 0
fallbacks: int = 0
cache_hits: int = 0
compiled_graphs: list[GraphRecord] = []
eager_graphs: int = 0  # Dynamo graphs left to eager (fewer ops than min_acc_module_size)

_lock = threading.Lock()


def reset() -> None:
    """Zero every counter and forget the recorded graphs."""
    global graphs_compiled, generated_kernels, extern_calls, fallbacks, cache_hits, eager_graphs
    with _lock:
        graphs_compiled = generated_kernels = extern_calls = fallbacks = cache_hits = eager_graphs = 0
        compiled_graphs.clear()


def record_eager_graph() -> None:
    global eager_graphs
    with _lock:
        eager_graphs += 1


def record(graph: GraphRecord) -> None:
    """Add one compiled graph to the counters (called by the compile driver)."""
    global graphs_compiled, generated_kernels, extern_calls, fallbacks, cache_hits
    with _lock:
        graphs_compiled += 1
        generated_kernels += len(graph.kernels)
        extern_calls += len(graph.externs)
        fallbacks += graph.fallback_reason is not None
        cache_hits += graph.cache_hit
        compiled_graphs.append(graph)
