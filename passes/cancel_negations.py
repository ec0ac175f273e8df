"""Cancel pairs of negations across products, where nothing is generated.

The derivative of ``cos`` is ``-sin``: the backward of ``x.cos().cos()`` (seed 004's tutorial)
is ``tangent * -sin(cos x) * -sin(x)``, two full passes of ``neg`` that eager runs too. Where a
fused kernel computes them (CUDA, the interpreter) a negation costs nothing; where each op is its
own ATen call (fusion off: the CPU without the interpreter) each is a pass over memory. Negation
is exact and IEEE rounding is symmetric, so ``(-a) * b == -(a * b)`` bit for bit (NaN aside,
whose sign no result depends on): a product's negated operands are read through (when the product
is their only reader), and an odd count leaves one negation on the product, where the next
product may cancel it. A negation moves outward only onto a product of its operand's size, so no
pass grows; the unused negations are left to dead-code elimination.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import meta_value, same_tensor_layout

aten = torch.ops.aten


def _single_reader_negation(value: Any, reader: fx.Node) -> fx.Node | None:
    """``value``'s operand when ``value`` is ``neg(operand)`` read by ``reader`` alone."""
    if isinstance(value, fx.Node) and value.op == "call_function" and value.target is aten.neg.default \
            and set(value.users) == {reader} and isinstance(value.args[0], fx.Node):
        return value.args[0]
    return None


def cancel_negations(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if getattr(config, "fusion", True):
        return gm  # a generated kernel computes a negation for free
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
