"""Cancel pairs of negations across products, where nothing is generated; where kernels are
generated, take negations out of ``cat``s.

The derivative of ``cos`` is ``-sin``: the backward of ``x.cos().cos()`` (seed 004's tutorial)
is ``tangent * -sin(cos x) * -sin(x)``, two full passes of ``neg`` that eager runs too. Where a
fused kernel computes them (CUDA, the interpreter) a negation costs nothing; where each op is its
own ATen call (fusion off: the CPU without the interpreter) each is a pass over memory. Negation
is exact and IEEE rounding is symmetric, so ``(-a) * b == -(a * b)`` bit for bit (NaN aside,
whose sign no result depends on): a product's negated operands are read through (when the product
is their only reader), and an odd count leaves one negation on the product, where the next
product may cancel it. A negation moves outward only onto a product of its operand's size, so no
pass grows; the unused negations are left to dead-code elimination.

Where kernels are generated, ``cat([-a, b], d)`` (Llama's ``rotate_half``) becomes
``cat([a, b], d) * sign``, ``sign`` being -1 over ``a``'s slice of ``d`` and 1 elsewhere, computed
from an ``arange``: a cat's inputs are loaded from memory by its kernel (``passes/fusion.py``), so
a negated input was a kernel of its own, and the sign is computed in the cat's kernel for free.
``slice_backward(-g)`` (rotate_half's backward) likewise. Multiplying by -1 is negation, bit for
bit, and the zeros outside a slice stay +0.0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import fake_result, meta_value, same_tensor_layout

aten = torch.ops.aten


def _single_reader_negation(value: Any, reader: fx.Node) -> fx.Node | None:
    """``value``'s operand when ``value`` is ``neg(operand)`` read by ``reader`` alone."""
    if isinstance(value, fx.Node) and value.op == "call_function" and value.target is aten.neg.default \
            and set(value.users) == {reader} and isinstance(value.args[0], fx.Node):
        return value.args[0]
    return None


def _static_size(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _sign_along(gm: fx.GraphModule, after: fx.Node, negated: list[tuple[int, int]], size: int,
                rank_after_dim: int, like: torch.Tensor) -> fx.Node:
    """Nodes after ``after`` computing -1 over the ``negated`` ranges of ``size`` and 1 elsewhere,
    shaped to broadcast along the cat dim (``rank_after_dim`` trailing size-1 dims)."""
    graph = gm.graph
    cursor = [after]

    def call(target: Any, *args: Any, **kwargs: Any) -> fx.Node:
        with graph.inserting_after(cursor[0]):
            node = graph.call_function(target, args, kwargs)
        node.meta["val"] = fake_result(target, args, kwargs, like=like)
        cursor[0] = node
        return node

    index = call(aten.arange.start_step, 0, size, 1, dtype=torch.int64, device=like.device)
    inside: fx.Node | None = None
    for start, end in negated:
        bounds = ([call(aten.ge.Scalar, index, start)] if start > 0 else []) + (
            [call(aten.lt.Scalar, index, end)] if end < size else [])
        piece = bounds[0] if len(bounds) == 1 else call(aten.logical_and.default, *bounds)
        inside = piece if inside is None else call(aten.logical_or.default, inside, piece)
    assert inside is not None
    flag = call(aten._to_copy.default, inside, dtype=like.dtype)
    sign = call(aten.add.Tensor, call(aten.mul.Tensor, flag, -2.0), 1.0)  # exactly -1.0 or 1.0
    if rank_after_dim:
        sign = call(aten.view.default, sign, [size] + [1] * rank_after_dim)
    return sign


def _same_layout_with(node: fx.Node, args: tuple) -> bool:
    """Whether ``node``'s op on ``args`` has the layout ``node`` was traced with (ATen picks a
    cat's memory format from its inputs' strides, and a negation's input may be a strided view)."""
    return same_tensor_layout(fake_result(node.target, args), meta_value(node))


def _signed(gm: fx.GraphModule, node: fx.Node, args: tuple, negated: list[tuple[int, int]], dim: int) -> None:
    """``node`` recomputed from ``args`` and multiplied by -1 over ``negated`` of ``dim``."""
    out = meta_value(node)
    node.args = args
    sign = _sign_along(gm, node, negated, out.shape[dim], out.dim() - 1 - dim, out)
    with gm.graph.inserting_after(sign):
        signed = gm.graph.call_function(aten.mul.Tensor, (node, sign))
    signed.meta = dict(node.meta)
    node.replace_all_uses_with(signed, delete_user_cb=lambda user: user is not signed)


def _negation_into_slice_backward(gm: fx.GraphModule, node: fx.Node) -> bool:
    """``slice_backward(-g, ...)`` = ``slice_backward(g, ...) * sign``: its zeros stay +0.0."""
    from ait_dynamo.passes.fusion_maps import Refused, slice_backward_span

    inner = _single_reader_negation(node.args[0], node)
    out = meta_value(node)
    if inner is None or not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point:
        return False
    try:
        dim, start, end = slice_backward_span(node)
    except Refused:
        return False
    if not (isinstance(start, int) and isinstance(end, int)):
        return False  # the sign is built over static spans only
    args = (inner, *node.args[1:])
    if not _same_layout_with(node, args):
        return False
    _signed(gm, node, args, [(start, end)], dim)
    return True


def _negations_into_cats(gm: fx.GraphModule) -> bool:
    changed = False
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is aten.slice_backward.default:
            changed = _negation_into_slice_backward(gm, node) or changed
            continue
        if node.op != "call_function" or node.target is not aten.cat.default or not isinstance(node.args[0], (list, tuple)):
            continue
        out = meta_value(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if not isinstance(out, torch.Tensor) or not out.dtype.is_floating_point or not isinstance(dim, int) or out.dim() == 0:
            continue
        dim %= out.dim()
        sizes = [_static_size(meta_value(item).shape[dim]) if isinstance(meta_value(item), torch.Tensor)
                 and meta_value(item).dim() == out.dim() else None for item in node.args[0]]
        if any(size is None for size in sizes) or _static_size(out.shape[dim]) is None:
            continue
        items, negated, start = [], [], 0
        for item, size in zip(node.args[0], sizes):
            inner = _single_reader_negation(item, node)
            if inner is not None and size:
                items.append(inner)
                negated.append((start, start + size))
            else:
                items.append(item)
            start += size
        args = (items, *node.args[1:])
        if not negated or not _same_layout_with(node, args):
            continue
        _signed(gm, node, args, negated, dim)
        changed = True
    return changed


def cancel_negations(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if getattr(config, "fusion", True):
        # a generated kernel computes a negation for free, but not one inside a cat
        if _negations_into_cats(gm):
            gm.recompile()
        return gm
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.mul.Tensor or len(node.args) != 2 or node.kwargs:
            continue
        operands = list(node.args)
        stripped = 0
        for index, value in enumerate(operands):
            inner = _single_reader_negation(value, node)
            # moved onto the product, a negation must not cover more elements than it did
            if inner is not None and same_tensor_layout(meta_value(value), meta_value(node)):
                operands[index] = inner
                stripped += 1
        if stripped == 0:
            continue
        node.args = tuple(operands)
        changed = True
        if stripped % 2:
            with gm.graph.inserting_after(node):
                negated = gm.graph.call_function(aten.neg.default, (node,))
            negated.meta = dict(node.meta)
            node.replace_all_uses_with(negated, delete_user_cb=lambda user: user is not negated)
    if changed:
        gm.recompile()
    return gm
