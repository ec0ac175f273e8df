"""Common-subexpression elimination: one node per distinct (op, arguments)."""

from __future__ import annotations

from typing import Any, Hashable

from torch import fx

from ait_dynamo.passes.graph_utils import is_mutating, is_random


class _Unhashable(Exception):
    pass


def _key(value: Any, replaced: dict[fx.Node, fx.Node]) -> Hashable:
    if isinstance(value, fx.Node):
        return ("node", replaced.get(value, value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_key(v, replaced) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _key(v, replaced)) for k, v in sorted(value.items())))
    if isinstance(value, float):
        # 0.0 == -0.0 and nan != nan: compare floats by their bits, with the type, so 1 != 1.0.
        return ("float", value.hex())
    if isinstance(value, slice):
        return ("slice", _key(value.start, replaced), _key(value.stop, replaced), _key(value.step, replaced))
    try:
        hash(value)
    except TypeError:
        raise _Unhashable from None
    return (type(value).__name__, value)


def common_subexpression_elimination(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    seen: dict[Hashable, fx.Node] = {}
    replaced: dict[fx.Node, fx.Node] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or is_mutating(node) or is_random(node):
            continue
        try:
            key = (node.target, _key(node.args, replaced), _key(node.kwargs, replaced))
        except _Unhashable:
            continue
        first = seen.setdefault(key, node)
        if first is not node:
            replaced[node] = first
    for node, first in replaced.items():
        node.replace_all_uses_with(first)
        gm.graph.erase_node(node)
    if replaced:
        gm.recompile()
    return gm
