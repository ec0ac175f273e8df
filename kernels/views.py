"""Views in the generated wrapper as one C call with the traced layout (issue 12).

A view line such as ``x.view(1024, 768)`` goes through the dispatcher and recomputes the result's
strides on every call: 2.6-3.7 us of host time a line inside ait's GPT-2 and ViT wrappers on the
H200 machine, against 0.8-1.3 us for Inductor's ``reinterpret_tensor`` (the same C function as
here), whose sizes, strides and offset are numbers written into the source
(``benchmarks/results/nvidia-h200/models/host_1ca44c4/``: 303 view lines in GPT-2's training
backward, 193 in ViT-B/16's inference, with its 12 ``unbind`` calls at 8.9 us each).

Writing the traced layout into the source is only right where the base really has its traced
layout at run time, along every dimension of more than one element (what addresses memory). The
wrapper knows that of:

* a buffer a generated kernel writes: allocated by the wrapper with the traced sizes and strides
  (a kernel that fails is replaced by ATen, whose outputs :meth:`LaunchSite.recover` lays out as
  traced before anything reads them);
* a view written this way of such a base;
* a graph input or an ATen call's result that the wrapper's first call checks
  (``kernels/layout_guard.py``): where the check finds another layout, the value is copied into
  the traced one on every call, as for the inputs of kernels. Inputs the graph writes to are
  never replaced by a copy, so views of them stay ``Tensor`` methods.

The sizes, strides and offset written are what the view op itself gives on a meta tensor of the
base's traced layout (exactly ATen's; a trace of real tensors records views at offset 0), the
offset relative to the base's own, so a base at another offset than traced (a graph input that is
itself a slice) still gives the right view. Complex tensors and the views that set a lazy
conjugate or negative bit keep their ATen call: a reinterpretation drops the bit (with complex
views reinterpreted, the OpInfo tests of ``polar``, ``fft.ifft`` and ``linalg.eig`` gave wrong
gradients and outputs).
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import has_static_layout, is_view_op, may_alias_input, mutated_placeholders
from ait_dynamo.passes.plan import FusionGroup, Plan

_guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)


def _as_strided_from(base: torch.Tensor, size: Any, stride: Any, offset_delta: int) -> torch.Tensor:
    return base.as_strided(size, stride, base.storage_offset() + offset_delta)


reinterpret: Callable[..., torch.Tensor] = getattr(_guards, "_reinterpret_tensor", None) or _as_strided_from
"""``reinterpret(base, size, stride, offset_delta)``: a tensor on ``base``'s storage at ``base``'s
storage offset plus ``offset_delta`` (torch's C function where it has one, else ``as_strided``)."""

# views that set a tensor's lazy conjugate or negative bit: a reinterpretation would drop it; and
# as_strided, whose storage offset counts from the storage's start, not from the base's offset
_NOT_REINTERPRETED = {getattr(torch.ops.aten, name) for name in ("_conj", "conj", "_neg_view", "resolve_conj",
                                                               "resolve_neg", "as_strided")
                      if hasattr(torch.ops.aten, name)}


def _view_results(node: fx.Node) -> list[torch.Tensor] | None:
    """The tensors a view op makes of its first argument, when each can be written as a
    reinterpretation of it (static layouts, the base's dtype and device), else ``None``: the op
    itself run on a meta tensor of the base's traced sizes and strides at offset 0, so the
    offsets are exactly ATen's (a trace of real tensors records views at offset 0)."""
    target = node.target
    if (node.op != "call_function" or not is_view_op(target) or not node.args
            or target.overloadpacket in _NOT_REINTERPRETED):  # type: ignore[union-attr]
        return None
    base = node.args[0]
    if not isinstance(base, fx.Node) or not has_static_layout(base.meta.get("val")):
        return None
    base_value = base.meta["val"]
    if base_value.is_complex():  # conjugate and negative bits, views to real parts: left to ATen
        return None
    other_nodes: list[fx.Node] = []
    fx.node.map_arg((node.args[1:], node.kwargs), other_nodes.append)
    if other_nodes:  # sizes computed in the graph (symbolic shapes)
        return None
    meta_base = torch.empty_strided(tuple(base_value.shape), tuple(base_value.stride()), dtype=base_value.dtype,
                                    device="meta")
    try:
        value = node.target(meta_base, *node.args[1:], **node.kwargs)  # type: ignore[operator]
    except Exception:  # noqa: BLE001 - an op without a meta kernel keeps its Tensor method
        return None
    results = list(value) if isinstance(value, (list, tuple)) else [value]
    traced = node.meta.get("val")
    traced_results = list(traced) if isinstance(traced, (list, tuple)) else [traced]
    if not results or len(results) != len(traced_results) or not all(
            has_static_layout(r) and r.dtype == base_value.dtype and isinstance(t, torch.Tensor)
            and not r.is_conj() and not r.is_neg()
            and tuple(r.shape) == tuple(t.shape) and tuple(r.stride()) == tuple(t.stride())
            for r, t in zip(results, traced_results)):
        # a view to another dtype (view.dtype, view_as_real) is not a re-striding; a trace that
        # disagrees with ATen on strides is left to ATen
        return None
    return results


def reinterpreted_views(plan: Plan, triton_runs: Callable[[FusionGroup], bool]
                        ) -> tuple[dict[fx.Node, list[torch.Tensor]], set[fx.Node]]:
    """(each view node the wrapper writes through :data:`reinterpret` → the meta tensors of its
    results, values whose layout its first call must check for that). ``triton_runs(group)``:
    whether the group launches its kernel (else its outputs are ATen's)."""
    mutated = mutated_placeholders(plan.graph)
    known: set[fx.Node] = set()  # values whose run-time layout is the traced one (or checked to be)
    externs: set[fx.Node] = set()  # fresh tensors from ATen: their layout can be checked
    views: dict[fx.Node, list[torch.Tensor]] = {}
    to_check: set[fx.Node] = set()
    for step in plan.steps:
        if isinstance(step, FusionGroup):
            outputs = [n for n in step.outputs if has_static_layout(n.meta.get("val"))]
            (known if triton_runs(step) else externs).update(outputs)
            continue
        node = step.node
        if node.op != "call_function":
            continue
        if node.target is operator.getitem and node.args[0] in views:
            known.add(node)  # one result of a view op written as a tuple of reinterpretations
            continue
        if node.target is operator.getitem and node.args[0] in externs:
            externs.add(node)  # one fresh result of an ATen call returning several (attention)
            continue
        results = _view_results(node)
        if results is None:
            if not may_alias_input(node):  # a fresh tensor (a copy of one cannot miss a write)
                externs.add(node)
            continue
        base = node.args[0]
        assert isinstance(base, fx.Node)
        if base not in known:
            checkable = (base.op == "placeholder" and base not in mutated) or base in externs
            if not checkable or not isinstance(base.meta.get("val"), torch.Tensor):
                continue
            to_check.add(base)
            known.add(base)
        views[node] = results
        if isinstance(node.meta["val"], torch.Tensor):
            known.add(node)
    return views, to_check


def reinterpret_source(node: fx.Node, results: list[torch.Tensor], base_name: str) -> str:
    """``_reinterpret(base, size, stride, offset delta)`` for a view node and its ``results`` from
    :func:`reinterpreted_views` (a tuple of them for a view op with several results)."""
    calls = [f"_reinterpret({base_name}, {tuple(r.shape)!r}, {tuple(r.stride())!r}, {r.storage_offset()})"
             for r in results]
    if isinstance(node.meta["val"], torch.Tensor):
        return calls[0]
    return f"({calls[0]},)" if len(calls) == 1 else f"({', '.join(calls)})"
