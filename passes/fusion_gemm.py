"""GEMM groups of the fusion planner: an mm / addmm / bmm that the Triton template computes
(``kernels/gemm_choice.py`` says which) starts a group over its product's space, and the
pointwise work consuming the product joins it as the epilogue (``passes/fusion.py`` keeps other
groups out: no merges, no reductions, no regrowing the space).

``nn.Linear`` on a [batch, tokens, features] input reaches the planner as a 2-D GEMM whose
product is viewed as [batch, tokens, N] before its epilogue; that view splits the tile's rows
over the leading dims (``gemm_rows``), so the epilogue still fuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from ait_dynamo.kernels import gemm_choice
from ait_dynamo.passes.fusion_maps import Refused, view_map
from ait_dynamo.passes.sizes import is_one

if TYPE_CHECKING:
    from ait_dynamo.passes.fusion import Planner, _Group

aten = torch.ops.aten


def start_gemm_group(planner: "Planner", node: fx.Node) -> None:
    """An mm / addmm / bmm the template computes starts a GEMM group over its output's
    space; pointwise consumers of that output join it as the epilogue."""
    # refusals keep the op class first: "compute_intensive op: ..." is how reports group them
    refusal = gemm_choice.template_refusal(node)
    if refusal is not None:
        raise Refused(f"compute_intensive op: {refusal}")
    chosen, why = gemm_choice.backend_choice(node, planner.config.gemm_backends, planner.gemm_measured)
    if not chosen:
        raise Refused(f"compute_intensive op: GEMM runs through ATen ({why})")
    value = node.meta["val"]  # template_refusal checked it: one static, strided tensor
    group = planner._new_group(tuple(value.shape))
    group.gemm = node
    group.gemm_rows = (1,) if node.target is aten.bmm.default else (0,)
    planner._add(group, node, tuple(None if is_one(s) else d for d, s in enumerate(value.shape)))

def split_gemm_rows(planner: "Planner", group: "_Group", node: fx.Node, shape: tuple) -> bool:
    """``node`` reshapes the product's rows into leading dims (gemm_choice.splits_rows): the
    group's space becomes the view's, the rows run over all but its last dim. Only while the
    GEMM is alone in its group (no member's dim map refers to the old space)."""
    try:
        view_map(node, tuple(group.gemm.meta["val"].shape), group.maps[group.gemm], shape)
        return False  # inserting size-1 dims only: an ordinary view
    except Refused:
        pass
    if len(group.nodes) != 1 or not gemm_choice.splits_rows(group.gemm, node):
        raise Refused("view of a GEMM product that is not a reshape of its rows")
    group.space = tuple(shape)
    group.gemm_rows = tuple(range(len(shape) - 1))
    last = len(shape) - 1
    # the product's own map: its columns run along the last dim; its rows, over several
    # dims, are indexed by the template itself (codegen_gemm), never through this map
    group.maps[group.gemm] = (None, None if is_one(shape[-1]) else last)
    planner._add(group, node, tuple(None if is_one(s) else d for d, s in enumerate(shape)))
    return True
