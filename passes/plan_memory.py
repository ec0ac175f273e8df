"""The plan's memory, as the generated wrapper will hold it: which storages live during each step.

A storage is born at the step that makes it (a graph input: before the first step) and dies after
the last step that reads it or any view of it (``plan.frees_after``); the graph's outputs live past
the call. Each element of a tuple result (``convolution_backward``'s gradients) is its own storage,
alive while the tuple or that element's ``getitem`` is. Constants are not counted: they live as long
as the compiled graph, the same bytes at every step.

What the model leaves out: the workspace an ATen call takes while it runs (cuDNN's, cuBLAS's) and
the caching allocator's rounding. Its use is comparing steps of one plan: where the peak is, and
whether keeping a dead buffer a few steps longer (``kernels/slots.py``) would raise it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import may_alias_input
from ait_dynamo.passes.plan import ExternCall, Plan


@dataclass(frozen=True)
class Storage:
    """One buffer of the plan: owned by ``root`` (a fresh value, or the ``getitem`` of one tuple
    element), of ``nbytes``, alive during steps ``born`` to ``dies`` (both included; -1 before the
    first step, ``len(plan.steps)`` past the last)."""

    root: fx.Node
    nbytes: int
    born: int
    dies: int


def _hint(size: Any) -> int:
    if isinstance(size, int):
        return size
    if isinstance(size, torch.SymInt):
        hint = size.node.hint
        return int(hint) if hint is not None else 0
    return 0


def numel_hint(value: torch.Tensor) -> int:
    """The element count of ``value``, symbolic sizes at their hints (comparing them adds no guard)."""
    count = 1
    for size in value.shape:
        count *= _hint(size)
    return count


def storage_bytes(value: Any) -> int:
    """Bytes of the storage a tensor ``value`` spans from its offset (symbolic sizes at their
    hints; 0 for anything else)."""
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
        return 0
    sizes = [_hint(s) for s in value.shape]
    if any(s == 0 for s in sizes):
        return 0
    extent = 1 + sum((s - 1) * abs(_hint(t)) for s, t in zip(sizes, value.stride()))
    return extent * value.element_size()


def _name_deaths(plan: Plan) -> dict[fx.Node, int]:
    """The step after which each value's name is dropped (outputs and unread values past the end)."""
    end = len(plan.steps)
    deaths = {node: index for index, nodes in plan.frees_after.items() for node in nodes}
    for node in plan.unused_inputs:
        deaths[node] = -1
    for node in plan.output.all_input_nodes:
        deaths[node] = end
    return deaths


def aliases(node: fx.Node) -> list[fx.Node]:
    """``node`` and every value that may share its storage (views of views ...)."""
    found, seen, stack = [node], {node}, [node]
    while stack:
        for user in stack.pop().users:
            if user not in seen and may_alias_input(user):
                seen.add(user)
                found.append(user)
                stack.append(user)
    return found


def plan_storages(plan: Plan) -> list[Storage]:
    """Every storage the plan's wrapper holds (graph inputs included), with its lifetime."""
    return storages_and_owners(plan)[0]


def storages_and_owners(plan: Plan) -> tuple[list[Storage], dict[fx.Node, list[Storage]]]:
    """:func:`plan_storages`, and for each value the storages it reaches (its own, its base's;
    a tuple's: all of its elements')."""
    end = len(plan.steps)
    deaths = _name_deaths(plan)
    made: list[tuple[fx.Node, int]] = [(p, -1) for p in plan.placeholders]
    for index, step in enumerate(plan.steps):
        if isinstance(step, ExternCall) and (step.node.op != "call_function" or may_alias_input(step.node)):
            continue  # a view, a constant, a getitem, an unknown Python call: no storage it made
        made.extend((node, index) for node in step.produces())
    found: list[Storage] = []
    owners: dict[fx.Node, list[Storage]] = {}

    def add(root: fx.Node, nbytes: int, born: int, reaching: list[fx.Node]) -> None:
        storage = Storage(root, nbytes, born, max(deaths.get(n, end) for n in reaching))
        found.append(storage)
        for node in reaching:
            owners.setdefault(node, []).append(storage)

    for node, born in made:
        value = node.meta.get("val")
        if isinstance(value, (tuple, list)):
            elements = {user.args[1]: user for user in node.users if user.target is operator.getitem}
            for position, element in enumerate(value):
                getter = elements.get(position)
                reaching = [node] + (aliases(getter) if getter is not None else [])
                add(getter or node, storage_bytes(element), born, reaching)
        elif isinstance(value, torch.Tensor):
            add(node, storage_bytes(value), born, aliases(node))
    return found, owners


def live_bytes(plan: Plan, storages: list[Storage] | None = None) -> list[int]:
    """Per step, the bytes of the storages alive while it runs (its results included);
    ``storages``: the plan's, where already at hand."""
    steps = len(plan.steps)
    change = [0] * (steps + 1)  # added where a storage is born, taken away after it dies
    for storage in plan_storages(plan) if storages is None else storages:
        first, last = max(storage.born, 0), min(storage.dies, steps - 1)
        if first <= last:
            change[first] += storage.nbytes
            change[last + 1] -= storage.nbytes
    live, running = [], 0
    for delta in change[:steps]:
        running += delta
        live.append(running)
    return live
