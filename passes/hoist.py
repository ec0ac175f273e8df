"""Run each step that shrinks memory as early as its inputs allow.

A step whose result is much smaller than what it reads (a bias or layer_norm weight gradient: a
sum over all rows; a weight gradient's mm) frees its inputs at its last use. Graph order often
places it late: in the encoder block's backward, the layer_norm weight gradients ran after two
mm's and another layer's backward, holding 36.8 MiB of float32 inputs through the step's memory
peak. Moving it to just after its last producer frees them sooner and changes no result: steps
read only values, and the steps it may not pass (writes to memory, random draws, whose order
fixes the random stream) stay barriers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import (HIDDEN_WRITES, is_mutating, is_random, may_alias_input, meta_value,
                                           written_inputs)
from ait_dynamo.passes.plan import ExternCall, Step

SHRINK_FACTOR = 2  # hoist when the step reads at least this many times the bytes it writes


def _bytes(nodes: list[fx.Node]) -> int | None:
    total = 0
    for node in nodes:
        value = meta_value(node)
        if not isinstance(value, torch.Tensor):
            continue
        numel = value.numel()
        if isinstance(numel, torch.SymInt):  # its hint: reading it adds no guard
            numel = numel.node.hint
        if not isinstance(numel, int):
            return None
        total += numel * value.element_size()
    return total


def is_barrier(step: Step) -> bool:
    """Writes (including impure Python-level calls, see ``is_mutating``) and random draws."""
    return any(is_mutating(n) or is_random(n) for n in step.nodes)


def _storage_root(node: fx.Node) -> fx.Node:
    """The value whose storage ``node`` may share: followed through views to their base."""
    while node.op == "call_function" and may_alias_input(node) and node.all_input_nodes:
        node = node.all_input_nodes[0]
    return node


def _written_roots(step: Step) -> set[fx.Node] | None:
    """The storage roots a barrier step writes, or ``None`` where it may touch anything (a draw
    from the random stream, whose order is fixed; a write to a value of unknown storage)."""
    roots: set[fx.Node] = set()
    for node in step.nodes:
        if is_random(node):
            return None
        if is_mutating(node):
            if not isinstance(node.target, torch._ops.OpOverload) and node.target not in HIDDEN_WRITES:
                return None  # an impure Python call: what it touches is not known
            for written in written_inputs(node):
                root = _storage_root(written)
                if root.op != "placeholder":
                    return None  # a write into an intermediate: its aliases are not tracked here
                roots.add(root)
    return roots


def _passable(barrier: tuple[tuple[Any, ...], set[fx.Node] | None], step: Step) -> bool:
    """True where ``step`` (which writes nothing and draws nothing) may run before the barrier:
    it reads nothing the barrier writes. Training batch norm's running-statistics updates are
    such writes: without this, ResNet-50's max pool offsets (int8, from 49 MiB of int64 indices)
    stayed after the forward's last batch norm, and the indices lived through the forward."""
    written = barrier[1]
    return written is not None and not any(_storage_root(n) in written for n in step.reads())


def can_pass(step: Step, barrier: Step) -> bool:
    """True where ``step`` (which writes and draws nothing) may run on the other side of
    ``barrier``: that is no barrier, or writes nothing ``step`` reads."""
    return not is_barrier(barrier) or _passable(((), _written_roots(barrier)), step)


def _shrinks(step: Step) -> bool:
    if isinstance(step, ExternCall):
        target = step.node.target
        if step.node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
            return False
        if may_alias_input(step.node):
            return False  # a view: moving it moves nothing
    read, written = _bytes(step.reads()), _bytes(step.produces())
    return read is not None and written is not None and read > 0 and written * SHRINK_FACTOR <= read


def hoist_shrinking_steps(steps: list[Step]) -> list[Step]:
    """The steps, with the shrinking ones moved up to just after their latest dependency."""
    keys: list[tuple[Any, ...]] = []
    key_of: dict[fx.Node, tuple[Any, ...]] = {}
    barriers: list[tuple[tuple[Any, ...], set[fx.Node] | None]] = []  # (key, storage it writes)
    for position, step in enumerate(steps):
        key: tuple[Any, ...] = (position,)
        if is_barrier(step):
            barriers.append((key, _written_roots(step)))
        elif _shrinks(step):
            blocking = next((b[0] for b in reversed(barriers) if not _passable(b, step)), (-1,))
            earliest = max([blocking] + [key_of[n] for n in step.reads() if n in key_of])
            key = earliest + (position,)
        keys.append(key)
        if isinstance(step, ExternCall) and step.node.op == "get_attr":
            continue  # a constant is there from the start: not a dependency to wait for
        for node in step.produces():
            key_of[node] = key
    order = sorted(range(len(steps)), key=lambda i: keys[i])
    return [steps[i] for i in order]
