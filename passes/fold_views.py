"""Views of kernel inputs read in place: a chain of views of a tensor with static layouts becomes
(base, offset, strides) inside the kernel, and the view steps themselves are dropped."""

from __future__ import annotations


import torch
from torch import fx

from ait_dynamo.kernels import op_table
from ait_dynamo.passes.graph_utils import has_static_layout
from ait_dynamo.passes.plan import ExternCall, FusionGroup, Step

aten = torch.ops.aten

# The table's views, less reshape: a reshape may copy, and then its strides do not describe the base.
_FOLDED_VIEWS = op_table.VIEWS - {aten.reshape.default}


def fold_view(node: fx.Node, group_of: dict) -> tuple[fx.Node, int, list[fx.Node]] | None:
    """(base, element offset, view chain) when a group input is a chain of views of a tensor
    with static layouts: the kernel then reads the base in place through the view's strides."""
    chain: list[fx.Node] = []
    current = node
    while (
        current.op == "call_function" and current.target in _FOLDED_VIEWS and current not in group_of
        and isinstance(current.args[0], fx.Node)
    ):
        chain.append(current)
        current = current.args[0]
    if not chain or not has_static_layout(node.meta.get("val")) or not has_static_layout(current.meta.get("val")):
        return None
    base_meta, view_meta = current.meta["val"], node.meta["val"]
    if base_meta.device != view_meta.device or base_meta.dtype != view_meta.dtype:
        return None
    return current, view_meta.storage_offset() - base_meta.storage_offset(), list(reversed(chain))


def drop_folded_views(steps: list[Step], returned: list[fx.Node]) -> list[Step]:
    """A view step is not run when the graph does not return it and each of its readers is a
    kernel reading it in place (or another such view)."""
    folded_in: dict[fx.Node, list[FusionGroup]] = {}
    for step in steps:
        if isinstance(step, FusionGroup):
            for chain in step.view_chains.values():
                for view in chain:
                    folded_in.setdefault(view, []).append(step)
    dropped: set[fx.Node] = set()
    for step in reversed(steps):
        if not isinstance(step, ExternCall) or step.node not in folded_in or step.node in returned:
            continue
        groups = folded_in[step.node]
        if all(user in dropped or any(user in group.nodes for group in groups) for user in step.node.users):
            dropped.add(step.node)
    return [s for s in steps if not (isinstance(s, ExternCall) and s.node in dropped)]
