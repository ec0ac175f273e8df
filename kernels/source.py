"""Python source for FX values and call targets, for the generated wrapper module.

Everything that can appear in an aten graph must print as source that evaluates back to an equal
value (or the identical callable). Anything else raises :class:`CodegenError`, and the compile
driver falls back to running the graph as it is.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import torch
from torch import fx


class CodegenError(Exception):
    """The graph holds something the wrapper generator cannot express."""


def target_source(target: Any) -> tuple[str, str | None]:
    """(expression, module to import or None) for a call_function target."""
    if isinstance(target, torch._ops.OpOverload):
        return f"torch.ops.{target.namespace}.{target._opname}.{target._overloadname}", None
    if isinstance(target, torch._ops.HigherOrderOperator):
        if getattr(torch.ops.higher_order, target.name(), None) is target:
            return f"torch.ops.higher_order.{target.name()}", None
        raise CodegenError(f"higher-order operator {target.name()} is not reachable by name")
    module_name = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module_name or not qualname or "<" in qualname:
        raise CodegenError(f"call target {target!r} has no importable name")
    try:
        resolved: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            resolved = getattr(resolved, part)
    except (ImportError, AttributeError):
        raise CodegenError(f"call target {module_name}.{qualname} cannot be imported") from None
    if resolved is not target:
        raise CodegenError(f"{module_name}.{qualname} does not name the graph's target {target!r}")
    return f"{module_name}.{qualname}", module_name


def value_source(value: Any, names: Callable[[fx.Node], str]) -> str:
    """Source that rebuilds ``value``; nodes print as their variable names via ``names``."""
    if isinstance(value, fx.Node):
        return names(value)
    if value is None or isinstance(value, (bool, str)):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, complex):
        return f"complex({value_source(value.real, names)}, {value_source(value.imag, names)})"
    if isinstance(value, (list, tuple)):
        items = [value_source(v, names) for v in value]
        if isinstance(value, list):
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {value_source(v, names)}" for k, v in value.items()) + "}"
    if isinstance(value, slice):
        parts = (value.start, value.stop, value.step)
        return f"slice({', '.join(value_source(p, names) for p in parts)})"
    if value is Ellipsis:
        return "..."
    if isinstance(value, torch.dtype):
        return str(value)  # "torch.float32"
    if isinstance(value, torch.device):
        return f"torch.device({value.type!r}, {value.index!r})" if value.index is not None else f"torch.device({value.type!r})"
    if isinstance(value, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        return target_source(value)[0]  # an op passed as a value (with_effects(token, op, ...))
    if isinstance(value, (torch.layout, torch.memory_format)):
        text = str(value)
        if text.startswith("torch.") and getattr(torch, text[6:], None) == value:
            return text
    raise CodegenError(f"cannot write {type(value).__name__} value {value!r} as source")


# View ops printed as Tensor methods: the same ATen op, without the Python frame of
# ``OpOverload.__call__``. Views were 45 of the 59 ATen calls in the encoder block's backward
# wrapper (profile_gpu.py's debug dump at 6ff1e71), and host time, not the GPU, bounds that
# training step (memory_and_launch/profile_*/encoder_block_ait.txt). Its effect on the step's
# time has not been measured on its own.
_TENSOR_METHODS = {
    torch.ops.aten.view.default: "view",
    torch.ops.aten._unsafe_view.default: "view",  # same stride check as view; no autograd here
    torch.ops.aten.t.default: "t",
    torch.ops.aten.transpose.int: "transpose",
    torch.ops.aten.permute.default: "permute",
    torch.ops.aten.unsqueeze.default: "unsqueeze",
    torch.ops.aten.expand.default: "expand",
    torch.ops.aten.select.int: "select",
}


# The cheapest entry point into ATen for an op: ``OpOverload.__call__`` is a Python frame around
# its ``_op`` (the C++ operator handle, which takes the same arguments: the same call, one frame
# less); the public ``torch`` functions below dispatch to exactly that overload with their
# generated C++ argument parser, cheaper still. Host time per call on the 2-core CPU machine
# (4x4 fp32, timeit, torch 2.13): ``torch.ops.aten.mm.default(a, b)`` 5.1 us, bound ``_op`` 2.5 us,
# ``torch.mm`` 1.7 us; ``addmm`` 6.0 / 4.1 / 3.9 us. Each op below has no overload but ``default``
# and ``out``, so its public function, called without ``out=``, can only run ``default``.
# Convolutions: EfficientNet-B0 makes 81 a step; through ``_op`` each cost 66 us of host time in
# ait's wrapper against 44 us for Inductor's ``torch.convolution`` (cProfile on the H200, 9afe921).
ENTRY_POINTS: dict[Any, str] = {
    getattr(torch.ops.aten, name).default: f"torch.{name}"
    for name in ("mm", "bmm", "addmm", "convolution", "cat", "embedding", "native_layer_norm",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
}


# Ops of this project whose Python implementation the wrapper calls directly, registered by the
# module that defines each op: op → (module, function). A ``torch.library.custom_op`` called
# through the dispatcher runs its autograd wrapper, a redispatch and an aliasing check: 23.5 and
# 26.3 us a call against 1.3 and 1.5 us for the function itself in two runs (2-core CPU machine,
# torch 2.13, a probe op with ``ait::cutlass_gemm``'s signature:
# benchmarks/results/cpu-xeon/cutlass_host/). The wrapper runs below autograd, so the function is
# the op.
DIRECT_FUNCTIONS: dict[Any, tuple[str, str]] = {}


def entry_point_source(target: torch._ops.OpOverload) -> str:
    """Source that evaluates, once, to the cheapest callable running ``target``."""
    if target in DIRECT_FUNCTIONS:
        module, function = DIRECT_FUNCTIONS[target]
        return f"__import__({module!r}, fromlist=[{function!r}]).{function}"
    return ENTRY_POINTS.get(target) or f"{target_source(target)[0]}._op"


def call_source(node: fx.Node, names: Callable[[fx.Node], str],
                bound: Callable[[Any], str] | None = None) -> tuple[str, str | None]:
    """Source of the right-hand side of ``node`` (call_function / call_method), plus an import.
    ``bound(op)``: the name an OpOverload is bound to once (:func:`entry_point_source`), for the
    wrapper's hot path."""
    args = [value_source(a, names) for a in node.args]
    args += [f"{k}={value_source(v, names)}" for k, v in node.kwargs.items()]
    method = _TENSOR_METHODS.get(node.target) if node.op == "call_function" else None
    if method is not None and not node.kwargs and node.args and isinstance(node.args[0], fx.Node):
        if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) and node.args[1]:
            # sizes as separate arguments: x.view(512, 768) took 1.35 us against 2.07 us for
            # x.view([512, 768]), permute 1.13 against 2.29 us (2-core CPU machine, torch 2.13:
            # benchmarks/results/cpu-triton-interpreter/host_calls/)
            return f"{args[0]}.{method}({', '.join(value_source(a, names) for a in node.args[1])})", None
        return f"{args[0]}.{method}({', '.join(args[1:])})", None
    if node.op == "call_function" and bound is not None and isinstance(node.target, torch._ops.OpOverload):
        return f"{bound(node.target)}({', '.join(args)})", None
    if node.op == "call_function":
        function, module = target_source(node.target)
        return f"{function}({', '.join(args)})", module
    if node.op == "call_method":
        assert isinstance(node.target, str)
        return f"{args[0]}.{node.target}({', '.join(args[1:])})", None
    raise CodegenError(f"no source for a {node.op} node")
