"""Place the backward's recomputations right before their first use.

The extracted backward graph keeps joint-graph order, so every recomputed forward value would be
computed at the very start of the backward and stay alive until its use: the memory that
rematerialization saves would come back as backward peak memory. Emitting each backward node
after only the inputs it needs (depth-first, in joint-graph order) keeps every recomputed value
alive only as long as the backward step that consumes it, as the autograd engine would. Nodes
the backward does not need are dropped.
"""

from __future__ import annotations

import torch
from torch import fx


def _is_anchor(node: fx.Node, tangent_closure: set[fx.Node]) -> bool:
    if node.op == "output" or node in tangent_closure:
        return True
    # Mutations and other impure ops keep their place relative to the backward computation.
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable


def schedule_recomputation_late(bw_module: fx.GraphModule) -> fx.GraphModule:
    """Reorder ``bw_module``'s nodes in place (a linear pass) and return it."""
    graph = bw_module.graph
    nodes = list(graph.nodes)
    order = {node: index for index, node in enumerate(nodes)}
    closure: set[fx.Node] = set()
    for node in nodes:
        if (node.op == "placeholder" and "tangents" in str(node.target)) or any(
            arg in closure for arg in node.all_input_nodes
        ):
            closure.add(node)
    emitted: set[fx.Node] = {n for n in nodes if n.op == "placeholder"}
    schedule: list[fx.Node] = []
    for anchor in nodes:
        if anchor in emitted or not _is_anchor(anchor, closure):
            continue
        stack: list[tuple[fx.Node, bool]] = [(anchor, False)]
        while stack:
            node, inputs_done = stack.pop()
            if node in emitted:
                continue
            if inputs_done:
                emitted.add(node)
                schedule.append(node)
                continue
            stack.append((node, True))
            for arg in sorted(node.all_input_nodes, key=order.__getitem__, reverse=True):
                if arg not in emitted:
                    stack.append((arg, False))
    # Nodes nothing in the backward needs: graph extraction keeps impure ones (a random op whose
    # inputs happen to be saved) although their values are unused; running them would only
    # advance the RNG. Drop them.
    for node in reversed(nodes):
        if node not in emitted and not node.users:
            graph.erase_node(node)
    # Graph._root is fx's sentinel before the first node: appending to it puts a node first.
    cursor = next((n for n in reversed(nodes) if n.op == "placeholder"), graph._root)
    for node in schedule:
        if node is not cursor:
            cursor.append(node)
        cursor = node
    graph.lint()
    bw_module.recompile()
    return bw_module
