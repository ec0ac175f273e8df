"""The fusion planner: graph → :class:`~ait_dynamo.passes.plan.Plan`.

At this stage every node becomes an :class:`ExternCall` run through ATen; fusion groups are added
by the fusion planner work (kernels generated from templates). ``refuse`` is the one place that
records why a node was not fused, so the fusion report can show every reason.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import fx

from ait_dynamo.passes.plan import ExternCall, Plan, compute_lifetimes

log = logging.getLogger("ait_dynamo")


def refuse(refusals: dict[str, str], node: fx.Node, reason: str) -> None:
    """Record that ``node`` stays outside any fusion group, and why."""
    refusals[node.name] = reason
    log.debug("not fused: %s (%s): %s", node.name, node.target, reason)


def build_plan(gm: fx.GraphModule, config: Any) -> tuple[Plan, dict[str, str]]:
    """Steps in graph order; returns the plan and the refusals (node name → reason)."""
    refusals: dict[str, str] = {}
    placeholders: list[fx.Node] = []
    steps: list[ExternCall] = []
    output: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            placeholders.append(node)
        elif node.op == "output":
            output = node
        else:
            if config.is_fallback(node.target):
                refuse(refusals, node, "listed in fallback_ops")
            steps.append(ExternCall(node))
    assert output is not None, "an FX graph always ends in an output node"
    plan = Plan(graph=gm.graph, placeholders=placeholders, steps=steps, output=output)
    compute_lifetimes(plan)
    return plan, refusals
