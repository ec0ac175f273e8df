"""Fold values that depend on no graph input into constants, computed once at compile time.

Models build masks and index tables from shapes on every call. torchvision's Swin builds each
shifted block's attention mask from ``new_zeros``, nine slice fills and a subtraction: about 40
ATen calls a block, read by one kernel (H200 profile of Swin-T, fp16 batch 32: 50 fill and 45
copy kernels, 135 device copies a step). T5 computes its relative position buckets from
``arange``s in five small kernels. Folded, each is one constant of the compiled graph (a
``get_attr``, read where it lies).

What folds: calls of ATen ops whose tensor arguments are constants (``get_attr`` or folded
values); the tensor argument of ``new_zeros``/``zeros_like`` and their kind only lends its dtype,
device and shape, so those fold whatever it is. Not folded: random ops, ops that write an
input, uninitialised memory (``empty``), symbolic shapes, and a value the graph returns (a caller
could write into it, and every call would hand out the same tensor; a forward's values saved for
the backward are outputs too): it is computed on each call from folded inputs. A value is
replaced where a node that does not fold reads it, if it holds at most ``_MAX_BYTES`` (a
constant lives as long as the compiled graph); larger intermediates (over ``_MAX_WORK_BYTES``)
are not computed.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import has_static_layout, is_mutating, is_random, meta_value, real_tensors

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten

_MAX_BYTES = 4 << 20
_MAX_WORK_BYTES = 64 << 20

# Their first argument lends dtype, device (and for the *_like ones, shape): not its values.
_METADATA_ONLY_FIRST = {
    aten.new_zeros.default, aten.new_ones.default, aten.new_full.default,
    aten.zeros_like.default, aten.ones_like.default, aten.full_like.default,
}
_UNINITIALISED = {aten.empty.memory_format, aten.empty_strided.default, aten.new_empty.default,
                  aten.new_empty_strided.default, aten.empty_like.default}


def _bytes(value: Any) -> int:
    return value.numel() * value.element_size()


def _foldable(node: fx.Node, constant: set[fx.Node]) -> bool:
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    if target in _UNINITIALISED or is_random(node) or is_mutating(node):
        return False
    value = meta_value(node)
    if not has_static_layout(value) or _bytes(value) > _MAX_WORK_BYTES:
        return False
    inputs = node.all_input_nodes
    if target in _METADATA_ONLY_FIRST and inputs and node.args and node.args[0] is inputs[0]:
        if not has_static_layout(meta_value(inputs[0])):
            return False
        inputs = inputs[1:]
    return all(n in constant for n in inputs)


_NEW_OPS = {aten.new_zeros.default, aten.new_ones.default, aten.new_full.default}


def _stand_in(node: fx.Node, target: Any) -> torch.Tensor:
    """A real tensor with the metadata of a node whose values are not read: an empty one for
    ``new_*`` (dtype and device only: the activation it stands for may be large), one of the
    node's layout for ``*_like`` (its result is as large, and at most ``_MAX_WORK_BYTES``)."""
    meta = meta_value(node)
    if target in _NEW_OPS:
        return torch.empty((0,), dtype=meta.dtype, device=meta.device)
    return torch.empty_strided(tuple(meta.shape), tuple(meta.stride()), dtype=meta.dtype, device=meta.device)


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def fold_constants(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    graph = gm.graph
    constant: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "get_attr" and isinstance(meta_value(node), torch.Tensor):
            constant.add(node)
        elif _foldable(node, constant) and not any(user.op == "output" for user in node.users):
            constant.add(node)  # a returned value (or one saved for the backward) is computed per call
    folds = [n for n in constant if n.op == "call_function" and _bytes(meta_value(n)) <= _MAX_BYTES
             and any(user not in constant for user in n.users)]
    if not folds:
        return gm
    values: dict[fx.Node, Any] = {}
    try:
        with real_tensors(), torch.no_grad():
            for node in graph.nodes:
                if node not in constant:
                    continue
                if node.op == "get_attr":
                    values[node] = _fetch(gm, str(node.target))
                    continue
                stand_ins = {}
                if node.target in _METADATA_ONLY_FIRST and node.args and node.args[0] not in constant:
                    stand_ins[node.args[0]] = _stand_in(node.args[0], node.target)
                args, kwargs = fx.node.map_arg((node.args, node.kwargs),
                                               lambda n: values[n] if n in values else stand_ins[n])
                values[node] = node.target(*args, **kwargs)
    except Exception as error:  # an op that cannot run at compile time: the graph stays as it is
        log.debug("constant folding skipped: %s", error)
        return gm
    order = {node: index for index, node in enumerate(graph.nodes)}
    for index, node in enumerate(sorted(folds, key=order.__getitem__)):
        name = f"_folded_constant{index}"
        while hasattr(gm, name):
            name += "_"
        gm.register_buffer(name, values[node], persistent=False)
        with graph.inserting_before(node):
            replacement = graph.get_attr(name)
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
    for node in reversed(list(graph.nodes)):
        if node in constant and node.op == "call_function" and not node.users:
            graph.erase_node(node)
    log.debug("constant folding: %d values folded", len(folds))
    graph.lint()
    gm.recompile()
    return gm
