"""The planner's groups as plan steps (``passes/fusion.py``): one ``FusionGroup`` per group, placed
where its last member was, between the ATen calls (``ExternCall``) left in graph order."""

from __future__ import annotations

import itertools

import torch
from torch import fx

from ait_dynamo.passes.fold_views import drop_folded_views, fold_view
from ait_dynamo.passes.fusion_groups import Group
from ait_dynamo.passes.fusion_maps import flatten, order_steps
from ait_dynamo.passes.graph_utils import meta_value
from ait_dynamo.passes.plan import ExternCall, FusionGroup, Step


def steps_of_groups(order: list[fx.Node], output: fx.Node, group_of: dict[fx.Node, Group]) -> list[Step]:
    """Groups become one step each, placed where their last member was; members nobody
    outside reads are not outputs. A group with no output (dead) is dropped."""
    users_outside: dict[fx.Node, int] = {}
    returned = [a for a in flatten(output.args[0]) if isinstance(a, fx.Node)]
    for node in order:
        group = group_of.get(node)
        if group is None:
            continue
        for user in node.users:
            if group_of.get(user) is not group:
                users_outside[node] = users_outside.get(node, 0) + 1
    last_member: dict[int, fx.Node] = {}
    members_of: dict[int, list[fx.Node]] = {}  # in graph order, gathered in one pass
    for node in order:
        if node in group_of:
            last_member[group_of[node].ident] = node
            members_of.setdefault(group_of[node].ident, []).append(node)
    steps: list[Step] = []
    kernel_names = itertools.count()
    for node in order:
        group = group_of.get(node)
        if group is None:
            steps.append(ExternCall(node))
            continue
        if last_member[group.ident] is not node:
            continue
        members = members_of[group.ident]
        outputs = [n for n in members if n in users_outside]
        inputs: list[fx.Node] = []
        scalars: list[fx.Node] = []
        for member in members:
            for used in member.all_input_nodes:
                if group_of.get(used) is group or used in inputs or used in scalars:
                    continue
                (inputs if isinstance(meta_value(used), torch.Tensor) else scalars).append(used)
        if not outputs:
            continue
        copies = {n: returned.count(n) for n in outputs if returned.count(n) > 1}
        input_views, view_chains = {}, {}
        for used in inputs:
            folded = fold_view(used, group_of)
            if folded is not None:
                input_views[used], view_chains[used] = folded[:2], folded[2]
        steps.append(
            FusionGroup(
                name=f"kernel_{next(kernel_names)}",
                kind=group.kind,
                gemm_rows=group.gemm_rows if group.gemm is not None else (),
                nodes=members,
                inputs=inputs,
                outputs=outputs,
                space=group.space,
                reduced=tuple(sorted(group.reduced)),
                dim_maps={n: group.maps[n] for n in members},
                output_copies=copies,
                input_views=input_views,
                view_chains=view_chains,
                scalar_inputs=scalars,
            )
        )
    return order_steps(drop_folded_views(steps, returned))
