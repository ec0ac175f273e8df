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
    from ait_dynamo.passes.fusion import Planner
    from ait_dynamo.passes.fusion_groups import Group

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
    absorb_prologues(planner, group)

def split_gemm_rows(planner: "Planner", group: "Group", node: fx.Node, shape: tuple) -> bool:
    """``node`` reshapes the product's rows into leading dims (gemm_choice.splits_rows): the
    group's space becomes the view's, the rows run over all but its last dim. Only while the
    group has no epilogue yet (no member's dim map refers to the old space)."""
    try:
        view_map(node, tuple(group.gemm.meta["val"].shape), group.maps[group.gemm], shape)
        return False  # inserting size-1 dims only: an ordinary view
    except Refused:
        pass
    epilogue = [n for n in group.nodes if planner.index[n] > planner.index[group.gemm]]  # prologues precede it
    if epilogue or not gemm_choice.splits_rows(group.gemm, node):
        raise Refused("view of a GEMM product that is not a reshape of its rows")
    group.space = tuple(shape)
    group.gemm_rows = tuple(range(len(shape) - 1))
    last = len(shape) - 1
    # the product's own map: its columns run along the last dim; its rows, over several
    # dims, are indexed by the template itself (codegen_gemm), never through this map
    group.maps[group.gemm] = (None, None if is_one(shape[-1]) else last)
    planner._add(group, node, tuple(None if is_one(s) else d for d, s in enumerate(shape)))
    return True


# Prologues: one elementwise op on one tensor, with Python scalars (a cast, a scale, a negation),
# optionally behind a transpose: what autocast (fp32 weights cast to bf16 per step) and scaled
# inputs put in front of a GEMM. Its result is read nowhere else, so it need not exist in memory.
PROLOGUE_OPS = frozenset({
    aten._to_copy.default, torch.ops.prims.convert_element_type.default, aten.mul.Tensor, aten.mul.Scalar,
    aten.div.Tensor, aten.div.Scalar, aten.neg.default,
})


def prologue_chain(planner: "Planner", gemm: fx.Node, operand: fx.Node) -> list[fx.Node] | None:
    """``[op]`` or ``[op, transpose]`` computing a GEMM operand that the template can compute
    while it loads the operand's tiles (``codegen_gemm``), or ``None``."""
    view = operand if operand.target in gemm_choice.TRANSPOSES else None
    op = operand.args[0] if view is not None else operand
    if not isinstance(op, fx.Node) or op.target not in PROLOGUE_OPS or len(op.users) != 1:
        return None
    if view is not None and len(view.users) != 1:
        return None
    if list(gemm.args).count(operand) != 1:  # mm(a, a): one load serves no other operand
        return None
    tensors = op.all_input_nodes
    if len(tensors) != 1 or tensors[0] is not op.args[0]:
        return None
    source, value = tensors[0].meta.get("val"), op.meta.get("val")
    if not isinstance(source, torch.Tensor) or source.dtype not in gemm_choice.TEMPLATE_DTYPES:
        return None
    # the operand's strides address the source as they address the op's result
    if (tuple(source.shape) != tuple(value.shape) or tuple(source.stride()) != tuple(value.stride())
            or not all(isinstance(v, int) for v in (*source.shape, *source.stride(), source.storage_offset()))):
        return None
    group = planner.group_of.get(op)
    chain = [op] if view is None else [op, view]
    if group is None or group.gemm is not None or group.is_reduction or group.nodes != chain:
        return None
    return chain


def absorb_prologues(planner: "Planner", group: "Group") -> None:
    """Pull the prologue chains of the GEMM's operands into its group (their own groups go)."""
    gemm = group.gemm
    _, a, b = gemm_choice.operands(gemm)
    for operand in (a, b):
        chain = prologue_chain(planner, gemm, operand)
        if chain is None:
            continue
        planner.groups.pop(planner.group_of[chain[0]].ident, None)
        for node in chain:
            # never indexed through this map: the template loads the source tile itself
            planner._add(group, node, (None,) * node.meta["val"].dim())
