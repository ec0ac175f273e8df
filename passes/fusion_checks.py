"""What a node must be to enter a fusion group (``passes/fusion.py``'s planner): a single strided
tensor of a fused dtype whose sizes the wrapper can compute; the refusal record for those that
stay outside; and the casts the planner treats apart (a widening cast that a reduction reads is
left to the reduction's kernel).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels import op_table
from ait_dynamo.kernels.op_table import OpClass
from ait_dynamo.kernels.triton_values import FUSIBLE_DTYPES
from ait_dynamo.passes.fusion_maps import Refused
from ait_dynamo.passes.graph_utils import meta_value
from ait_dynamo.passes.sizes import computable

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten


def refuse(refusals: dict[str, str], node: fx.Node, reason: str) -> None:
    """Record that ``node`` stays outside any fusion group, and why."""
    refusals[node.name] = reason
    log.debug("not fused: %s (%s): %s", node.name, node.target, reason)


# Casts that may read a float64 operand (kernels/triton_values.py FUSIBLE_DTYPES: to float32 only).
CASTS = frozenset({torch.ops.prims.convert_element_type.default, aten._to_copy.default})


def widens_for_a_reduction(node: fx.Node) -> bool:
    """Whether ``node`` is a cast to a wider dtype that a reduction reads (autocast's upcast before
    a LayerNorm or a softmax): a cast a reduction's kernel can do as it loads."""
    if node.target not in CASTS or not isinstance(node.args[0], fx.Node):
        return False
    source, value = tensor_meta(node.args[0]), tensor_meta(node)
    if source is None or value is None or value.dtype.itemsize <= source.dtype.itemsize:
        return False
    return any(op_table.op_class(user.target) is OpClass.REDUCTION for user in node.users)


def tensor_meta(node: Any) -> torch.Tensor | None:
    value = meta_value(node)
    return value if isinstance(value, torch.Tensor) else None


def check_tensor(node: fx.Node, known_symbols: set) -> torch.Tensor:
    value = tensor_meta(node)
    if value is None:
        raise Refused("result is not a single tensor")
    if value.dtype not in FUSIBLE_DTYPES:
        raise Refused(f"dtype {value.dtype} is not fused")
    if value.layout != torch.strided:
        raise Refused("non-strided layout")
    for size in list(value.shape) + list(value.stride()) + [value.storage_offset()]:
        if not computable(size, known_symbols):
            raise Refused(f"size expression {size} cannot be computed at run time")
    return value
