"""The order in which a pointwise kernel walks its iteration space: that of its output's memory.

``xindex`` runs over the iteration dims with the last one fastest. For row-major tensors that is
the natural order of the dims; for a channels-last one (``passes/layout.py``) the natural order
[N, C, H, W] would put neighbouring threads C elements apart in memory, so every load and store
would be scattered. Walking the dims in the output's memory order ([N, H, W, C]) keeps them
coalesced, and lets the access use the flat index where the strides allow
(``codegen_access.Access``).
"""

from __future__ import annotations

from typing import Any

import torch

from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.sizes import is_one, static_int


def _laid_out_like_space(node: Any, dim_map: tuple, nonunit: list[int]) -> bool:
    meta = node.meta.get("val")
    return isinstance(meta, torch.Tensor) and set(nonunit) <= {m for m in dim_map if m is not None}


def memory_order(group: FusionGroup, space: list[Any], dims: list[int]) -> list[int]:
    """``dims`` (iteration dims, natural order) reordered outermost-in-memory first, after the
    largest output that runs along all of them (writes are what must coalesce: each element is
    written once, while inputs of the same layout are read alike); the natural order where none does or its strides are symbolic. Size-1 dims, which no index moves along, go first."""
    nonunit = [d for d in dims if not is_one(space[d])]
    if len(nonunit) < 2:
        return dims
    candidates = [n for n in group.outputs if _laid_out_like_space(n, group.dim_maps[n], nonunit)]
    if not candidates:
        return dims
    reference = max(candidates, key=lambda n: static_int(n.meta["val"].numel()) or 0)
    stride_of: dict[int, int] = {}
    meta = reference.meta["val"]
    for k, d in enumerate(group.dim_maps[reference]):
        if d is not None and d in nonunit:
            stride = static_int(meta.stride()[k])
            if stride is None:
                return dims
            stride_of[d] = stride
    ordered = sorted(nonunit, key=lambda d: -stride_of[d])  # stable: ties keep the natural order
    return [d for d in dims if is_one(space[d])] + ordered
