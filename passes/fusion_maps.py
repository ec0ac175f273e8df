"""Index maps of the fusion planner: how broadcasting and views turn into iteration-dim maps,
and the dependency order of the planned steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.plan import Step
from ait_dynamo.passes.sizes import is_one, provably, same_size

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


def reduction_dims(node: fx.Node, rank: int) -> tuple[list[int], bool]:
    """(reduced dims, keepdim) of a reduction node over an operand of ``rank`` dims."""
    if node.target in (aten.sum.default, aten.mean.default, aten.prod.default, aten.any.default, aten.all.default):
        return list(range(rank)), False  # over everything
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    dims = sorted({d % rank if rank else 0 for d in dims})
    return dims, bool(keepdim)


def reduced_map(source_map: DimMap, dims: list[int], keepdim: bool) -> DimMap:
    if keepdim:
        return tuple(None if k in dims else m for k, m in enumerate(source_map))
    return tuple(m for k, m in enumerate(source_map) if k not in dims)


def edges_between(first: list[fx.Node], second: list[fx.Node]) -> list[tuple[fx.Node, fx.Node]]:
    """(user, used) pairs where a member of one group reads a member of the other."""
    members = {node: 0 for node in first} | {node: 1 for node in second}
    return [
        (user, used)
        for user, side in members.items()
        for used in user.all_input_nodes
        if members.get(used, side) != side
    ]


def edge_agrees(user: fx.Node, used: fx.Node, maps: dict[fx.Node, DimMap], reduced: frozenset) -> bool:
    """Whether ``user`` reads ``used`` at the iteration point where both are computed. Inside a
    group a member reads its operands' values at the current indices, so the maps must agree
    with how the op indexes its operand (broadcasting, a view, a reduction). Each group is
    consistent on its own; a merge must check the reads between the two: a value read from memory
    by one group may run along another iteration dim in the other group (bilinear upsampling's
    backward reads a [8, 1] column of an index group whose space was [8]: issue #10)."""
    from ait_dynamo.kernels import op_table
    from ait_dynamo.kernels.op_table import OpClass

    used_shape = tuple(used.meta["val"].shape)
    user_shape = tuple(user.meta["val"].shape)
    used_map, user_map = maps[used], maps[user]
    kind = op_table.op_class(user.target)
    if kind is OpClass.REDUCTION:
        dims, keepdim = reduction_dims(user, len(used_shape))
        reduced_here = frozenset(used_map[d] for d in dims if used_map[d] is not None)
        return reduced_map(used_map, dims, keepdim) == user_map and reduced_here == reduced
    if kind is OpClass.VIEW:
        try:
            return view_map(user, used_shape, used_map, user_shape) == user_map
        except Refused:
            return False
    offset = len(user_shape) - len(used_shape)
    if offset < 0:
        return False
    return all(is_one(size) or used_map[k] == user_map[k + offset] for k, size in enumerate(used_shape))


def cat_dim(node: fx.Node) -> int:
    """The (non-negative) dim a ``cat`` node joins along."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim % node.meta["val"].dim()


def slice_backward_span(node: fx.Node) -> tuple[Any, Any, Any]:
    """``slice_backward(grad, sizes, dim, start, end, step)``: (dim, first, end) of the slice the
    gradient fills, normalised as ATen's ``slice`` normalises them. First and end are ints, or
    SymInts where a size or a bound is symbolic (``x[:, 1:]`` over a dynamic size ends at the
    size). Raises ``Refused`` unless the dim is static, the step is 1, and the normalised span
    provably matches the gradient's size for every value of the symbols."""
    grad, sizes, dim, start, end, step = node.args[:6]
    rank = len(sizes)
    if not isinstance(dim, int) or rank == 0:
        raise Refused("slice_backward along a symbolic dim")
    dim %= rank
    size, length = node.meta["val"].shape[dim], grad.meta["val"].shape[dim]
    if step != 1:
        raise Refused("slice_backward with a symbolic step or a step other than 1")
    start = _bound_value(start)
    end = size if end is None else _bound_value(end)
    start, end = _slice_bound(start, size), _slice_bound(end, size)
    if provably(end < start):
        end = start
    elif not provably(start <= end):
        raise Refused("slice_backward whose bounds cannot be ordered for every size")
    if not same_size(end - start, length) or provably(length == 0):
        raise Refused("slice_backward whose gradient does not fill its slice")
    return dim, start, end


# ATen's "to the end" default (INT64_MAX) and anything near it: larger than any size, which sympy
# cannot prove of a symbol whose range has no upper bound.
_TO_THE_END = 2**62


def _bound_value(bound: Any) -> Any:
    """A slice bound argument as an int or SymInt (a node computing a symbolic size, as
    ``x[:, : x.shape[1] - 2]`` records)."""
    if isinstance(bound, fx.Node):
        bound = bound.meta.get("val")
    if isinstance(bound, bool) or not isinstance(bound, (int, torch.SymInt)):
        raise Refused("slice_backward with a bound that is not an integer")
    return bound


def _slice_bound(value: Any, size: Any) -> Any:
    """A slice bound as ATen normalises it: a negative one counts from the end, then it is
    clamped into ``[0, size]``; raises ``Refused`` where the clamp depends on a symbolic size."""
    if isinstance(value, int) and value >= _TO_THE_END:
        return size
    if provably(value >= 0):
        if provably(value <= size):
            return value
        if provably(size <= value):
            return size
    elif provably(value < 0):
        from_end = value + size
        if provably(from_end >= 0):
            return from_end
        if provably(from_end <= 0):
            return 0
    raise Refused("slice_backward whose bounds depend on a symbolic size")


def pad_amounts(node: fx.Node) -> dict[int, tuple[int, int]]:
    """``constant_pad_nd(x, pad, value)``: (before, after) of each padded dim (``pad`` lists the
    pairs from the last dim backwards). A negative amount crops, as ATen's ``constant_pad_nd``
    does (the gradient of a pad is a crop). Raises ``Refused`` unless every amount is static."""
    source, pads = node.args[0], node.args[1]
    rank = source.meta["val"].dim()
    if not isinstance(pads, (list, tuple)) or len(pads) % 2 or len(pads) > 2 * rank:
        raise Refused("constant_pad_nd with a malformed pad list")
    if not all(isinstance(p, int) and not isinstance(p, bool) for p in pads):
        raise Refused("constant_pad_nd with symbolic pads")
    return {rank - 1 - i: (pads[2 * i], pads[2 * i + 1]) for i in range(len(pads) // 2)}


@dataclass(frozen=True)
class PoolWindow:
    """``max_pool2d``'s window along the last two dims: (height, width) pairs."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]


def pool_window(node: fx.Node) -> PoolWindow:
    """``max_pool2d(x, kernel_size, stride=[], padding=0, dilation=1, ceil_mode=False)``'s window;
    raises ``Refused`` unless every size is a static int. ``ceil_mode`` needs nothing here: the
    result's shape, which ATen computed, says how many windows there are."""
    defaults = ([], [], [0], [1])
    given = list(node.args[1:5]) + list(defaults[len(node.args) - 1:])
    pairs = []
    for value in given:
        value = [value] if isinstance(value, int) else list(value)
        if len(value) > 2 or not all(isinstance(v, int) for v in value):
            raise Refused("max_pool2d with symbolic or malformed window sizes")
        pairs.append(tuple(value * 2) if len(value) == 1 else tuple(value))
    kernel, stride, padding, dilation = pairs
    if len(kernel) != 2:
        raise Refused("max_pool2d without a kernel size")
    return PoolWindow(kernel, stride if len(stride) == 2 else kernel, padding, dilation)
