"""Sizes and strides that may be symbolic (SymInt): static comparisons and run-time source.

Kernels take sizes as arguments; the generated wrapper computes each one from the graph inputs at
run time. A symbolic size prints as Python over *symbol sources*: ``s0`` → ``primals_1.size(0)``
or a SymInt placeholder, found once per graph from the placeholders' meta values.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import sympy
import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import statically_known_true
from torch.utils._sympy import functions as _functions


class SizeError(Exception):
    """A size expression the wrapper cannot compute at run time."""


def _expr(size: Any) -> Any:
    if isinstance(size, torch.SymInt):
        return size.node.expr
    return size


def provably(condition: Any) -> bool:
    """Whether a comparison of sizes holds for every value of their symbols; no guard is added
    (``bool()`` of a symbolic comparison would specialise the compiled graph on it)."""
    if isinstance(condition, bool):
        return condition
    try:
        return bool(statically_known_true(condition))
    except Exception:  # noqa: BLE001 - a comparison sympy cannot decide is "not provable"
        return False


def same_size(a: Any, b: Any) -> bool:
    """Provably equal (no guard is added)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return provably(a == b)
    except Exception:  # noqa: BLE001 - SymInt == sympy expression may raise before any test
        return False


def is_one(size: Any) -> bool:
    return same_size(size, 1)


def static_int(size: Any) -> int | None:
    if isinstance(size, int):
        return size
    expr = _expr(size)
    if isinstance(expr, sympy.Integer):
        return int(expr)
    return None


def _printable(expr: Any) -> bool:
    try:
        _print(expr, None)
    except SizeError:
        return False
    return True


def size_source_ok(size: Any) -> bool:
    """True if the wrapper can print ``size`` as Python: ints and symbols under +, *, natural
    powers, floor / ceiling division, modulo, min and max (:func:`_print`)."""
    if isinstance(size, int):
        return True
    return _printable(_expr(size))


def computable(size: Any, known_symbols: set) -> bool:
    """Whether the wrapper can compute ``size`` on each call: it prints (:func:`size_source_ok`)
    and every symbol in it is read from a graph input (:func:`symbol_sources`)."""
    return size_source_ok(size) and free_symbols(size) <= known_symbols


def symbol_sources(placeholders: Iterable[fx.Node], name: Callable[[fx.Node], str]) -> dict[Any, str]:
    """Symbol → Python source reading it from an input (SymInt placeholder, tensor size/stride)."""
    sources: dict[Any, str] = {}
    for node in placeholders:
        value = node.meta.get("val")
        if isinstance(value, torch.SymInt) and isinstance(_expr(value), sympy.Symbol):
            sources.setdefault(_expr(value), name(node))
        elif isinstance(value, torch.Tensor):
            for d, size in enumerate(value.shape):
                if isinstance(_expr(size), sympy.Symbol):
                    sources.setdefault(_expr(size), f"{name(node)}.size({d})")
            for d, stride in enumerate(value.stride()):
                if isinstance(_expr(stride), sympy.Symbol):
                    sources.setdefault(_expr(stride), f"{name(node)}.stride({d})")
    return sources


def size_source(size: Any, symbol_names: dict[Any, str]) -> str:
    """Python source of a size, given names of local variables holding each symbol."""
    if isinstance(size, int):
        return repr(size)
    return _print(_expr(size), symbol_names)


# torch's integer functions of sizes (torch.utils._sympy.functions), as Python over ints: a strided
# pooling or convolution output is FloorDiv((s - k), stride) + 1, a slice to half a dim FloorDiv(s, 2)
# and Max(1, ...) when the half may be empty. Each of them is exact on Python ints.
_FUNCTIONS: dict[Any, Callable[[list[str]], str]] = {
    _functions.FloorDiv: lambda a: f"({a[0]} // {a[1]})",
    _functions.CleanDiv: lambda a: f"({a[0]} // {a[1]})",
    _functions.CeilDiv: lambda a: f"(-(-{a[0]} // {a[1]}))",
    _functions.ModularIndexing: lambda a: f"(({a[0]} // {a[1]}) % {a[2]})",
    _functions.Mod: lambda a: f"({a[0]} % {a[1]})",
    _functions.PythonMod: lambda a: f"({a[0]} % {a[1]})",
    sympy.Mod: lambda a: f"({a[0]} % {a[1]})",  # the divisor's sign, as Python's
    _functions.PowByNatural: lambda a: f"({a[0]} ** {a[1]})",
    _functions.Max: lambda a: f"max({', '.join(a)})",
    _functions.Min: lambda a: f"min({', '.join(a)})",
    sympy.Max: lambda a: f"max({', '.join(a)})",
    sympy.Min: lambda a: f"min({', '.join(a)})",
}


def _print(expr: Any, names: dict[Any, str] | None) -> str:
    """``expr`` as Python over the variables ``names`` gives its symbols (``None``: any symbol, as
    its own name, to ask whether the expression prints at all)."""
    if isinstance(expr, sympy.Integer):
        return repr(int(expr))
    if isinstance(expr, sympy.Symbol):
        if names is None:
            return str(expr)
        if expr not in names:
            raise SizeError(f"symbol {expr} is not available from the graph inputs")
        return names[expr]
    if isinstance(expr, sympy.Add):
        return "(" + " + ".join(_print(a, names) for a in sorted(expr.args, key=str)) + ")"
    if isinstance(expr, sympy.Mul):
        return "(" + " * ".join(_print(a, names) for a in sorted(expr.args, key=str)) + ")"
    if isinstance(expr, sympy.Pow):
        exponent = expr.args[1]
        if isinstance(exponent, sympy.Integer) and int(exponent) > 0:
            return f"({_print(expr.args[0], names)} ** {int(exponent)})"
    function = _FUNCTIONS.get(type(expr))
    if function is not None:
        return function([_print(a, names) for a in expr.args])
    raise SizeError(f"size expression {expr} cannot be computed at run time")


def free_symbols(size: Any) -> set[Any]:
    expr = _expr(size)
    return set(getattr(expr, "free_symbols", set()))


# Ops whose output sizes depend on the values of their inputs, beyond torch's
# ``Tag.dynamic_output_shape``: torch 2.11 lacks the tag on ``_unique`` and records a fixed size
# for it (size 1 in index_fill's backward, whose true size is the number of distinct indices).
_VALUE_SIZED = frozenset({torch.ops.aten._unique.default})
_BOOL_INDEX_DTYPES = (torch.bool, torch.uint8)


def _sized_by_values(node: fx.Node) -> bool:
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return False
    if target is torch.ops.aten.index.Tensor:  # a mask selects a value-dependent count; integer indices do not
        indices = node.args[1] if len(node.args) > 1 else ()
        return any(isinstance(i, fx.Node) and getattr(i.meta.get("val"), "dtype", None) in _BOOL_INDEX_DTYPES
                   for i in indices)
    return target in _VALUE_SIZED or torch.Tag.dynamic_output_shape in target.tags


def _all_static(value: Any) -> bool:
    flat = value if isinstance(value, (list, tuple)) else [value]
    return all(not isinstance(size, torch.SymInt)
               for t in flat if isinstance(t, torch.Tensor) for size in t.shape)


def untrusted_sizes(graph: fx.Graph) -> list[fx.Node]:
    """Nodes whose outputs' sizes depend on tensor values but whose recorded sizes are fixed
    numbers: the recording cannot be right for every input, so no code may be specialised on it
    (with an unbacked symbol instead, the size checks of the planner already refuse it)."""
    return [node for node in graph.nodes
            if node.op == "call_function" and _sized_by_values(node) and _all_static(node.meta.get("val"))]
