"""Recompute a cheap pointwise value inside each of its readers' kernels, where computing it reads
fewer bytes than the value holds.

A value that several kernels read is written once and kept until its last reader. When it is a
few pointwise ops over smaller tensors (a broadcast of a per-image value, masked), each reader can
compute it from those instead: every reader then loads fewer bytes, and only the smaller inputs
stay alive. In ResNet-50's bf16 training backward, the average pool's gradient through the last
ReLU, ``where(mask, 0, expand(mm) / 49)``, is 6.1 MiB (32 x 2048 x 7 x 7); it is computed from
the saved bool mask (3.1 MiB) and a 32 x 2048 ``mm``. Three steps read it: the last block's
batch-norm gradient sums, that batch norm's input gradient and the residual branch's sum, the
first and the last 33 steps apart; written once, it was alive at the step's memory peak.

A value qualifies where at least one of its inputs is broadcast (fewer elements than it) and its
inputs hold fewer bytes than it. Its readers split into segments where an ATen call lies between
two of them (readers with none between may share a kernel, as a LayerNorm's mean, variance and
normalisation do). The first segment keeps the original; each later one gets its own copy of
those ops, which the planner fuses into its readers' kernels. Only where Triton kernels are
generated for the value: elsewhere ATen would run each copy as its own ops.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels import op_table, runtime
from ait_dynamo.passes.graph_utils import is_mutating, is_random, meta_value
from ait_dynamo.passes.plan_memory import numel_hint, storage_bytes

MOST_OPS = 8  # the ops a reader recomputes: a mask, a scale, a cast and their views


def _copyable(node: Any) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_function"
            and (node.target in op_table.POINTWISE or node.target in op_table.VIEWS)
            and not is_random(node) and not is_mutating(node))


def _ops_and_inputs(value: fx.Node, order: dict[fx.Node, int]) -> tuple[list[fx.Node], list[fx.Node]] | None:
    """The ops computing ``value`` that only it reads (it among them), and the values they read
    from outside; ``None`` where there are more than :data:`MOST_OPS`."""
    ops, inputs, stack = {value}, [], [value]
    while stack:
        for used in stack.pop().all_input_nodes:
            if used in ops or used in inputs:
                continue
            if _copyable(used) and all(user in ops for user in used.users):
                ops.add(used)
                stack.append(used)
                if len(ops) > MOST_OPS:
                    return None
            else:
                inputs.append(used)
    return sorted(ops, key=order.__getitem__), inputs


def _splits_kernels(node: fx.Node) -> bool:
    """A call the planner leaves to ATen (a convolution, an mm, our reductions' entry points):
    kernels on its two sides are not one kernel."""
    if node.op != "call_function" or node.target is operator.getitem:
        return False
    target = node.target
    return not (target in op_table.POINTWISE or target in op_table.VIEWS or target in op_table.REDUCTIONS)


def _segments(value: fx.Node, readers: list[fx.Node]) -> list[list[fx.Node]]:
    """``readers`` in graph order, split where an ATen call lies between two of them: readers of
    one segment may share a kernel, and share a copy."""
    segments: list[list[fx.Node]] = [[]]
    remaining = set(readers)
    node = value.next
    while remaining:
        if node in remaining:
            segments[-1].append(node)
            remaining.discard(node)
        if remaining and _splits_kernels(node) and segments[-1]:
            segments.append([])
        node = node.next
    return segments


def recompute_broadcast_values(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """Give each segment of readers after the first its own copy of a qualifying value's ops."""
    if not getattr(config, "fusion", True):
        return gm
    changed = False
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    for value in list(gm.graph.nodes):
        readers = sorted(value.users, key=lambda reader: order.get(reader, len(order)))
        if len(readers) < 2 or any(r.op == "output" for r in readers) or not _copyable(value):
            continue
        if value.target not in op_table.POINTWISE:  # a view: its base is the value to look at
            continue
        result = meta_value(value)
        if not isinstance(result, torch.Tensor) or not runtime.triton_runs_on(result.device.type):
            continue
        found = _ops_and_inputs(value, order)
        if found is None:
            continue
        ops, inputs = found
        values = [meta_value(node) for node in inputs]
        if not any(isinstance(v, torch.Tensor) and numel_hint(v) < numel_hint(result) for v in values):
            continue  # no broadcast input: a cast or an op over full-size values, written once
        if sum(storage_bytes(v) for v in values) >= storage_bytes(result):
            continue
        segments = _segments(value, readers)
        for segment in segments[1:]:
            copies: dict[fx.Node, fx.Node] = {}
            with gm.graph.inserting_before(segment[0]):
                for op in ops:
                    copies[op] = gm.graph.node_copy(op, lambda node: copies.get(node, node))
                    copies[op].meta = dict(op.meta)
            for reader in segment:
                reader.replace_input_with(value, copies[value])
        if len(segments) < 2:
            continue
        changed = True
        order = {node: index for index, node in enumerate(gm.graph.nodes)}  # the copies are in a later value's ops
    if changed:
        gm.recompile()
    return gm
