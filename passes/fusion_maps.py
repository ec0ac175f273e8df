"""Index maps of the fusion planner: how broadcasting and views turn into iteration-dim maps,
and the dependency order of the planned steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.plan import Step
from ait_dynamo.passes.sizes import is_one, same_size

aten = torch.ops.aten

DimMap = tuple  # tuple[int | None, ...]: per dim of a value, the iteration dim it runs along


class Refused(Exception):
    """The planner will not fuse this node; the message is the reason the report shows."""


def broadcast_map(operand_shape: tuple, node_shape: tuple, node_map: DimMap) -> DimMap:
    """The dim map of an operand broadcast (right-aligned, as ATen does) to a node's shape."""
    offset = len(node_shape) - len(operand_shape)
    if offset < 0:
        raise Refused("operand has more dims than the result")
    result = []
    for k, size in enumerate(operand_shape):
        target = node_map[k + offset]
        if is_one(size):
            result.append(None)
        elif target is None or not same_size(size, node_shape[k + offset]):
            raise Refused("operand does not broadcast to the result")
        else:
            result.append(target)
    return tuple(result)


def order_steps(steps: list[Step]) -> list[Step]:
    """Topological order of the steps: a group sits at its last member, but an extern that reads
    an earlier member's value would then come before the group: move such externs after it."""
    produced_by: dict[fx.Node, int] = {}
    for index, step in enumerate(steps):
        for node in step.produces():
            produced_by[node] = index
    placed: list[Step] = []
    done: set[int] = set()

    def place(index: int, visiting: set[int]) -> None:
        if index in done:
            return
        if index in visiting:
            raise RuntimeError("fusion plan has a cycle")
        visiting.add(index)
        for used in steps[index].reads():
            if used in produced_by:
                place(produced_by[used], visiting)
        visiting.discard(index)
        done.add(index)
        placed.append(steps[index])

    for index in range(len(steps)):
        place(index, set())
    return placed


def flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [item for v in value for item in flatten(v)]
    return [value]


def view_map(node: fx.Node, source_shape: tuple, source_map: DimMap, shape: tuple) -> DimMap:
    """Dim map of a view of an in-group value; raises when the view is not plain re-indexing."""
    target = node.target
    if target in (aten.permute.default, aten.transpose.int, aten.t.default):
        rank = len(source_shape)
        if target is aten.permute.default:
            perm = [d % rank for d in node.args[1]]
        elif target is aten.t.default:
            perm = list(reversed(range(rank)))
        else:
            a, b = node.args[1] % rank, node.args[2] % rank
            perm = list(range(rank))
            perm[a], perm[b] = perm[b], perm[a]
        return tuple(source_map[p] for p in perm)
    if target is aten.expand.default:
        offset = len(shape) - len(source_shape)
        result: list[int | None] = [None] * offset
        for k, size in enumerate(source_shape):
            if is_one(size) and not is_one(shape[k + offset]):
                raise Refused("expand of a computed value into a new iteration dim")
            result.append(source_map[k])
        if any(not is_one(s) for s in shape[:offset]):
            raise Refused("expand of a computed value into a new iteration dim")
        return tuple(result)
    if target is aten.alias.default:
        return source_map
    if target in (aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
                  aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default):
        # only inserting or dropping size-1 dims keeps the index arithmetic trivial
        kept_source = [(s, m) for s, m in zip(source_shape, source_map) if not is_one(s)]
        kept_result = [k for k, s in enumerate(shape) if not is_one(s)]
        if len(kept_source) != len(kept_result) or not all(
            same_size(s, shape[k]) for (s, _), k in zip(kept_source, kept_result)
        ):
            raise Refused("reshape of a computed value (would need a copy or div/mod indexing)")
        result = [None] * len(shape)
        for (_, m), k in zip(kept_source, kept_result):
            result[k] = m
        return tuple(result)
    raise Refused(f"view {target} of a computed value")
