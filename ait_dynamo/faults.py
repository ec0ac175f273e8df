"""Fault injection, for tests: make chosen generated kernels fail, or compute a wrong value.

Every failure inside ait must be survived with correct results and one warning naming the
cause. These hooks make the failures happen on demand::

    from ait_dynamo import faults
    with faults.inject("compile", kernel="kernel_0", graph="backward"):
        compiled = torch.compile(fn, backend="ait")
        compiled(x).sum().backward()     # the backward's kernel_0 fails to compile: ATen runs it

Kinds:

- ``"compile"``: the kernel's source gets a ``tl.static_assert(False)``, so Triton's own compiler
  (or its interpreter) rejects it at the first launch: the real compile-error path.
- ``"launch"``: the wrapper raises just before launching the kernel.
- ``"wrong_result"``: the kernel stores a wrong value (``x * 1.5 + 1``; integers ``+ 1``, bools
  negated): what the numerics guard (option ``verify``) must catch.
- ``"autotune_oom"``: benchmarking a kernel's configurations raises ``torch.cuda.OutOfMemoryError``.

Kernel faults take effect where code is generated, so they apply to graphs compiled inside the
``with`` block (their source differs, and so does their cache key); the generated code then
carries the fault for as long as it lives. ``kernel`` names a kernel (``"kernel_0"``, as the plan
and the fusion report name them) or ``None`` for every kernel; ``graph`` matches the graph's
name (``"graph_003_backward"``) by equality or by its kind suffix (``"backward"``), ``None``
for every graph.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from dataclasses import dataclass
from typing import Iterator

KINDS = ("compile", "launch", "wrong_result", "autotune_oom")

_lock = threading.Lock()
_active: list["Fault"] = []
_graph: contextvars.ContextVar[str | None] = contextvars.ContextVar("ait_faults_graph", default=None)


@dataclass(frozen=True)
class Fault:
    kind: str
    kernel: str | None = None
    graph: str | None = None

    def matches(self, kind: str, kernel: str | None, graph: str | None) -> bool:
        if kind != self.kind:
            return False
        if self.kernel is not None and kernel != self.kernel:
            return False
        if self.graph is not None and (graph is None or not (graph == self.graph or graph.endswith(f"_{self.graph}"))):
            return False
        return True


@contextlib.contextmanager
def inject(kind: str, kernel: str | None = None, graph: str | None = None) -> Iterator[Fault]:
    """Make ``kind`` happen to the chosen kernels while the block runs (see the module doc)."""
    if kind not in KINDS:
        raise ValueError(f"ait_dynamo.faults: unknown fault {kind!r}; valid kinds: {', '.join(KINDS)}")
    fault = Fault(kind, kernel, graph)
    with _lock:
        _active.append(fault)
    try:
        yield fault
    finally:
        with _lock:
            _active.remove(fault)


def active(kind: str, kernel: str | None = None, graph: str | None = None) -> bool:
    """Whether a fault of ``kind`` applies to ``kernel`` of ``graph`` (default: the graph being
    compiled in this thread)."""
    if not _active:
        return False
    graph = graph if graph is not None else _graph.get()
    with _lock:
        return any(f.matches(kind, kernel, graph) for f in _active)


@contextlib.contextmanager
def compiling(graph: str) -> Iterator[None]:
    """The compile driver names the graph it is generating code for."""
    token = _graph.set(graph)
    try:
        yield
    finally:
        _graph.reset(token)


def fail_launch(kernel: str) -> None:
    """Called by generated code where a ``launch`` fault was injected."""
    raise RuntimeError(f"ait_dynamo: injected launch failure of {kernel}")
