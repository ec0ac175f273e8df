"""Max pooling whose indices nothing reads becomes ``max_pool2d``, a value the planner fuses.

An inference graph (and a forward whose backward does not need the indices) traces
``nn.MaxPool2d`` as ``max_pool2d_with_indices`` and reads only its values. ATen computes and
writes the int64 indices anyway, and its channels-last CUDA kernel is slow: ResNet-50's stem
pool took 115 us of its 1.53 ms inference step at batch 32 fp16 on the H200 (profile of 8204cd8),
against about 16 us for the bytes it must move. ``max_pool2d`` computes the same values without
the indices; ``passes/fusion_shifted.py`` plans it as a group that loads each window tap at
shifted, masked indices (``kernels/codegen_shifted.py``), and where no kernel is generated ATen
runs it (``max_pool2d`` on CPU and CUDA tensors is ``max_pool2d_with_indices`` and its values).

The rewrite keeps the values' traced layout: it applies only where ``max_pool2d`` on the fake
inputs gives the same shape, strides and dtype as the values it replaces. A graph whose backward
reads the indices (``max_pool2d_with_indices_backward``) keeps the op as it is.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import fake_result, meta_value, same_tensor_layout

aten = torch.ops.aten


def _values_getitem(node: fx.Node) -> fx.Node | None:
    """The ``getitem(node, 0)`` that is ``node``'s only use (unused getitems aside), or ``None``."""
    users = [user for user in node.users if user.users or user.target is not operator.getitem]
    if len(users) != 1:
        return None
    (user,) = users
    if user.op == "call_function" and user.target is operator.getitem and user.args[1] == 0:
        return user
    return None


def drop_unused_pool_indices(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.max_pool2d_with_indices.default:
            continue
        values = _values_getitem(node)
        if values is None or node.kwargs:
            continue
        traced = meta_value(values)
        try:
            pooled = fake_result(aten.max_pool2d.default, node.args)
        except Exception:  # noqa: BLE001 - an argument form the fake op refuses: keep the traced op
            continue
        if not same_tensor_layout(pooled, traced):
            continue
        with gm.graph.inserting_before(node):
            replacement = gm.graph.call_function(aten.max_pool2d.default, node.args)
        replacement.meta.update(values.meta)
        values.replace_all_uses_with(replacement)
        for user in list(node.users):  # the values' getitem and unused ones
            gm.graph.erase_node(user)
        gm.graph.erase_node(node)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
