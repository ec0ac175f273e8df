"""Drop ops that return their input unchanged: same values, dtype, device, shape and strides; and
``cat`` of one non-empty input or ``slice_backward`` of a whole dim, which become that input or a
``clone`` of it.

An op is only dropped when its result is provably laid out like its input (a later ``view`` may
depend on the strides) and the result is not a graph output (AOTAutograd decided at trace time
whether each output aliases an input; returning the input itself would break that contract).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from torch.fx.experimental.symbolic_shapes import statically_known_true

from ait_dynamo.passes.graph_utils import is_view_op, meta_value, same_tensor_layout

aten = torch.ops.aten

# Ops that are the identity whenever the result has the input's layout.
_LAYOUT_NOOPS = {
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.expand.default,
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,  # compiled graphs run without autograd: detach is the identity
    aten._to_copy.default,
    aten.permute.default,
    aten.slice.Tensor,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.contiguous.default,
    aten.as_strided.default,
    torch.ops.prims.convert_element_type.default,
    # a copy of a constant (``torch.tensor(...)`` in the traced code) made on every call: the
    # graph is functional, and neither kernels nor in-place rewrites write into a constant
    # (kernels/reuse.py owned_buffers, passes/reinplace.py take only buffers the graph made)
    aten.lift_fresh_copy.default,
    # a pad of zero everywhere (same shape): torchvision's Swin pads each block's input to a
    # multiple of its window, which 56x56 already is (a 19 MB copy a block at batch 32)
    aten.constant_pad_nd.default,
}
# Arithmetic identities that are exact in IEEE arithmetic, NaN and -0.0 included
# (x + 0 is not: -0.0 + 0 is +0.0).
_ARITHMETIC_NOOPS = {
    aten.mul.Tensor: 1,
    aten.mul.Scalar: 1,
    aten.div.Tensor: 1,
    aten.div.Scalar: 1,
    aten.sub.Tensor: 0,
    aten.sub.Scalar: 0,
    aten.pow.Tensor_Scalar: 1,
}


def _is_noop(node: fx.Node) -> bool:
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    source = node.args[0]
    if node.target in _LAYOUT_NOOPS:
        pass
    elif node.target in _ARITHMETIC_NOOPS:
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            return False
        other = node.args[1]
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return False
        if other != _ARITHMETIC_NOOPS[node.target]:
            return False
    else:
        return False
    if node.target is aten._to_copy.default and node.kwargs.get("memory_format") not in (None, torch.preserve_format):
        return False
    if node.target is aten.constant_pad_nd.default and not all(type(amount) is int and amount == 0
                                                               for amount in node.args[1]):
        return False  # (-1, 1) keeps the shape but shifts the values: only all-zero pads are no-ops
    if not same_tensor_layout(meta_value(source), meta_value(node)):
        return False
    # a view's values are its strides from its storage offset: as_strided sets the offset, and
    # as_strided(x, x.shape, x.stride(), 1) is x shifted by one element
    return not is_view_op(node.target) or statically_known_true(
        meta_value(source).storage_offset() == meta_value(node).storage_offset())


# Dim reorders: two in a row that undo each other (``t(t(w))``, as the backward of a linear
# layer reads its weight) give back the first one's input.
_REORDERS = {aten.t.default, aten.transpose.int, aten.permute.default}


def _round_trip_source(node: fx.Node) -> fx.Node | None:
    if node.op != "call_function" or node.target not in _REORDERS or not node.args:
        return None
    inner = node.args[0]
    if not isinstance(inner, fx.Node) or inner.target not in _REORDERS or not isinstance(inner.args[0], fx.Node):
        return None
    source = inner.args[0]
    return source if same_tensor_layout(meta_value(source), meta_value(node)) else None


# Attention kernels read q, k and v (arguments 0-2) through their strides: a copy made only to
# hand them a contiguous tensor can go, where the strided one meets their alignment needs.
_ATTENTION = {
    aten._scaled_dot_product_cudnn_attention.default, aten._scaled_dot_product_flash_attention.default,
    aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_flash_attention_for_cpu.default,
    aten.scaled_dot_product_attention.default,
}


def _attention_operand_only(node: fx.Node, source: fx.Node) -> bool:
    value = meta_value(source)
    if not isinstance(value, torch.Tensor) or value.dim() == 0 or not node.users:
        return False
    aligned = 16 // value.element_size()
    strides = [statically_known_true(st % aligned == 0) for st in value.stride()[:-1]]
    if not (statically_known_true(value.stride(-1) == 1) and all(strides)
            and statically_known_true(value.storage_offset() % aligned == 0)):
        return False
    return all(user.target in _ATTENTION and node not in user.args[3:] and node not in user.kwargs.values()
               for user in node.users)


def _lone_cat_input(node: fx.Node) -> fx.Node | None:
    """``cat`` whose other inputs are all empty (a key/value cache that starts empty, as Hugging
    Face's ``DynamicCache`` does on the first step): the one input with the result's shape and dtype."""
    if node.op != "call_function" or node.target is not aten.cat.default or not isinstance(node.args[0], (list, tuple)):
        return None
    out, kept = meta_value(node), []
    for item in node.args[0]:
        value = meta_value(item)
        if not isinstance(value, torch.Tensor):
            return None
        if not statically_known_true(value.numel() == 0):
            kept.append(item)
    if len(kept) != 1:
        return None
    return kept[0] if _same_kind_and_shape(meta_value(kept[0]), out) else None


def _same_kind_and_shape(value: Any, out: Any) -> bool:
    """Tensors of one dtype and device and provably one shape (strides aside)."""
    if not isinstance(value, torch.Tensor) or not isinstance(out, torch.Tensor):
        return False
    if value.dtype != out.dtype or value.device != out.device or value.dim() != out.dim():
        return False
    return all(statically_known_true(a == b) for a, b in zip(value.shape, out.shape))


def _whole_slice_gradient(node: fx.Node) -> fx.Node | None:
    """``slice_backward`` whose gradient has the result's shape (the slice was the whole dim): the
    gradient. Static sizes never trace such a slice; over a symbolic size ``x[:, 1:]`` records one
    per leading dim, since whether ``end`` reaches the size is not known when tracing."""
    if node.op != "call_function" or node.target is not aten.slice_backward.default:
        return None
    grad = node.args[0]
    return grad if _same_kind_and_shape(meta_value(grad), meta_value(node)) else None


def _copy_of(node: fx.Node, source: fx.Node, is_output: bool) -> fx.Node | None:
    """What replaces ``node``, a fresh copy of ``source``'s values (``cat`` of one input, the
    gradient of a whole-dim slice): the source itself where the layout agrees or only attention
    kernels read it (not for a graph output, which must not alias), else ``clone`` into the
    contiguous layout ``cat`` gives (a pointwise copy the fusion planner can take)."""
    if not is_output and (same_tensor_layout(meta_value(source), meta_value(node))
                          or _attention_operand_only(node, source)):
        return source
    if not meta_value(node).is_contiguous():
        return None
    with node.graph.inserting_before(node):
        clone = node.graph.call_function(aten.clone.default, (source,), {"memory_format": torch.contiguous_format})
    clone.meta.update(node.meta)
    return clone


def remove_noops(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    # the output's operands as a set, kept up to date: asked of every node, the output's list
    # (a training backward returns a gradient per parameter) took a BERT-base training step's
    # passes to 0.75 s on the CPU, 0.50 s with the set (benchmarks/results/cpu-epyc/compile_time/)
    returned = set(output.all_input_nodes)
    changed = False
    for node in list(gm.graph.nodes):
        lone = _lone_cat_input(node) or _whole_slice_gradient(node)
        if lone is not None:
            replacement = _copy_of(node, lone, node in returned)
            if replacement is not None:
                if node in returned:
                    returned.discard(node)
                    returned.add(replacement)
                node.replace_all_uses_with(replacement)
                gm.graph.erase_node(node)
                changed = True
            continue
        if node in returned:
            continue
        replacement = node.args[0] if _is_noop(node) else _round_trip_source(node)
        if replacement is None:
            continue
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
        changed = True
    if changed:
        gm.recompile()
    return gm
