"""What kind of op a joint-graph node is, as far as recomputation is concerned.

One function, :func:`op_class`, answers for the partitioner. What is cheap to recompute (it fuses
into a backward kernel) comes from the fusion planner's op table (``kernels/op_table.py``); views,
randomness and purity come from torch's op tags and schemas; compute-intensive ops from the list
below.
"""

from __future__ import annotations

import enum
import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels.op_table import OpClass as FusedClass
from ait_dynamo.kernels.op_table import op_class as fusion_op_class

aten = torch.ops.aten


class OpClass(enum.Enum):
    """How a node may be recomputed in the backward graph."""

    PLACEHOLDER = "placeholder"  # a graph input: never recomputed, always available in forward
    VIEW = "view"  # aliases its input: free to recompute, never worth saving on its own
    POINTWISE = "pointwise"  # elementwise: the fusion planner fuses it into a neighbouring kernel
    REDUCTION = "reduction"  # reductions and one-pass normalizations the planner fuses
    COMPUTE_INTENSIVE = "compute_intensive"  # mm, bmm, convolution, attention: real FLOPs
    RANDOM = "random"  # draws from the global RNG: recomputing would draw different numbers
    REPLAYABLE_RANDOM = "replayable_random"  # RNG from explicit seed/offset inputs: replays exactly
    IMPURE = "impure"  # mutates, has side effects or returns nothing: never recomputed
    OTHER = "other"  # deterministic but not fused by the planner (indexing, sorting, ...)


# Compute-bound ops: banned from recompute unless a memory budget forces it.
_COMPUTE_INTENSIVE = {
    aten.mm,
    aten.addmm,
    aten.bmm,
    aten.baddbmm,
    aten.addbmm,
    aten.convolution,
    aten._convolution,
    aten.convolution_backward,
    aten._int_mm,
    aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_cudnn_attention,
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._flash_attention_forward,
    aten._efficient_attention_forward,
}
for _name in ("_scaled_mm", "_scaled_dot_product_attention_math", "_fused_sdp_choice"):
    if hasattr(aten, _name):
        _COMPUTE_INTENSIVE.add(getattr(aten, _name))

# aten._unsafe_view returns a tensor sharing its input's data but carries no alias annotation:
# as free as a view.
_VIEW_LIKE = {aten._unsafe_view}

# Ops whose outputs are fresh tensors computed without reading any data (fills, aranges): as cheap
# to recompute as a pointwise op.
_CONSTANT_FACTORIES = {
    aten.full,
    aten.full_like,
    aten.zeros,
    aten.zeros_like,
    aten.ones,
    aten.ones_like,
    aten.empty,
    aten.empty_like,
    aten.scalar_tensor,
    aten.arange,
    aten._to_copy,
    aten.clone,
}


def _replayable_random_targets() -> set[Any]:
    """RNG ops that take their seed and offset as inputs, so a recompute draws the same numbers."""
    targets: set[Any] = set()
    rngprims = getattr(torch.ops, "rngprims", None)
    for name in ("philox_rand",):
        packet = getattr(rngprims, name, None) if rngprims is not None else None
        if packet is not None:
            targets.add(packet)
    higher_order = getattr(torch.ops, "higher_order", None)
    for name in ("run_with_rng_state", "graphsafe_run_with_rng_state"):
        op = getattr(higher_order, name, None) if higher_order is not None else None
        if op is not None:
            targets.add(op)
    return targets


_REPLAYABLE_RANDOM = _replayable_random_targets()


def _packet(target: Any) -> Any:
    return target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target


def _is_view_overload(target: torch._ops.OpOverload) -> bool:
    schema = target._schema
    if schema.is_mutable or not schema.returns:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def _has_zero_dropout(node: fx.Node, target: torch._ops.OpOverload) -> bool:
    """Attention ops are tagged random because of their dropout; with ``dropout_p == 0`` they
    draw nothing and a recompute gives the same values."""
    for index, argument in enumerate(target._schema.arguments):
        if argument.name == "dropout_p":
            if argument.name in node.kwargs:
                value = node.kwargs[argument.name]
            elif index < len(node.args):
                value = node.args[index]
            else:
                value = argument.default_value
            return isinstance(value, (int, float)) and value == 0
    return False


def op_class(node: fx.Node) -> OpClass:
    """The recompute class of ``node`` (the one place that decides it)."""
    if node.op == "placeholder":
        return OpClass.PLACEHOLDER
    if node.op != "call_function":
        return OpClass.IMPURE if node.op != "get_attr" else OpClass.VIEW
    target = node.target
    if target is operator.getitem:
        return OpClass.VIEW
    if target in _REPLAYABLE_RANDOM or _packet(target) in _REPLAYABLE_RANDOM:
        return OpClass.REPLAYABLE_RANDOM
    if not isinstance(target, torch._ops.OpOverload):
        # Python operators on symbolic sizes (operator.mul on SymInts, sym_size) are pure.
        if getattr(target, "__module__", None) in ("_operator", "operator", "math"):
            return OpClass.POINTWISE
        if isinstance(target, torch._ops.OpOverloadPacket) or "sym" in getattr(target, "__name__", ""):
            return OpClass.POINTWISE
        return OpClass.IMPURE
    tags = target.tags
    if torch.Tag.nondeterministic_seeded in tags and not _has_zero_dropout(node, target):
        return OpClass.RANDOM
    schema = target._schema
    if schema.is_mutable or not schema.returns or torch.Tag.inplace_view in tags:
        return OpClass.IMPURE
    packet = target.overloadpacket
    if _is_view_overload(target) or packet in _VIEW_LIKE:
        return OpClass.VIEW
    if packet in _COMPUTE_INTENSIVE:
        return OpClass.COMPUTE_INTENSIVE
    # What generated kernels compute is the fusion op table's word: an op torch tags pointwise but
    # the table lacks would run as an ATen kernel of its own when recomputed, so it is not cheap.
    fused_as = fusion_op_class(target)
    if fused_as is FusedClass.POINTWISE or packet in _CONSTANT_FACTORIES:
        return OpClass.POINTWISE
    if fused_as is FusedClass.REDUCTION:
        return OpClass.REDUCTION
    if target.namespace in ("aten", "prims"):
        return OpClass.OTHER
    # Custom ops and other namespaces: we cannot know their cost or purity.
    return OpClass.IMPURE


FUSIBLE = frozenset({OpClass.POINTWISE, OpClass.REDUCTION, OpClass.REPLAYABLE_RANDOM})
"""Classes the fusion planner fuses into kernels (recomputing them adds no kernel of its own)."""


def is_fusible(node: fx.Node) -> bool:
    return op_class(node) in FUSIBLE
