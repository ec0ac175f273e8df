"""A small pattern language over FX graphs: patterns are data, one matcher walks them.

A pattern describes a value by how it was computed, from the consumer back to its inputs:

- ``Op(targets, args, name=...)``: a call to one of ``targets`` whose arguments match ``args``
  (patterns, by position; arguments not given are not checked); ``name`` captures the node.
- ``Capture(name)``: any value (a node or a Python constant), captured.
- ``Const(name, test)``: a Python constant (not a node) for which ``test`` holds, captured.
- ``AnyOf(p, q, ...)``: the first alternative that matches (captures of failed ones are dropped).
- ``maybe(wrap, inner)``: ``wrap(inner)`` or ``inner`` alone: an optional op around a value.

An op node inside a match (any but the root) must have no user outside the match: its value
would otherwise be needed as it is, and a rewrite could not drop it. Rewrites are tables of
(pattern, guard, replacement) entries that ``find_matches`` walks; each guard may refuse with a
reason, which the rewrite records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx

Captures = dict[str, Any]


@dataclass(frozen=True)
class Capture:
    name: str


@dataclass(frozen=True)
class Const:
    name: str
    test: Callable[[Any], bool] = lambda value: True


@dataclass(frozen=True)
class Op:
    targets: tuple
    args: tuple = ()
    name: str | None = None


@dataclass(frozen=True)
class AnyOf:
    options: tuple


def maybe(wrap: Callable[[Any], Any], inner: Any) -> AnyOf:
    """``wrap(inner)`` where that op is present, else ``inner`` itself."""
    return AnyOf((wrap(inner), inner))


def argument(node: fx.Node, index: int) -> Any:
    """The ``index``-th argument of an op node, positional or keyword, with its schema default."""
    if index < len(node.args):
        return node.args[index]
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        schema_args = target._schema.arguments
        if index < len(schema_args):
            spec = schema_args[index]
            if spec.name in node.kwargs:
                return node.kwargs[spec.name]
            if spec.has_default_value():
                return spec.default_value
    raise IndexError(f"{node.name} has no argument {index}")


@dataclass
class Match:
    root: fx.Node
    captures: Captures
    nodes: list[fx.Node] = field(default_factory=list)  # every op node of the match, root first
    escapes: fx.Node | None = None  # an inner node whose value is also used outside the match


def _match(pattern: Any, value: Any, captures: Captures, nodes: list[fx.Node]) -> bool:
    if isinstance(pattern, Capture):
        if pattern.name in captures and captures[pattern.name] is not value:
            return False
        captures[pattern.name] = value
        return True
    if isinstance(pattern, Const):
        if isinstance(value, fx.Node) or not pattern.test(value):
            return False
        captures[pattern.name] = value
        return True
    if isinstance(pattern, AnyOf):
        for option in pattern.options:
            trial, trial_nodes = dict(captures), list(nodes)
            if _match(option, value, trial, trial_nodes):
                captures.clear()
                captures.update(trial)
                nodes[:] = trial_nodes
                return True
        return False
    if isinstance(pattern, Op):
        if not isinstance(value, fx.Node) or value.op != "call_function" or value.target not in pattern.targets:
            return False
        nodes.append(value)
        if pattern.name is not None:
            captures[pattern.name] = value
        for index, sub in enumerate(pattern.args):
            try:
                arg = argument(value, index)
            except IndexError:
                return False
            if not _match(sub, arg, captures, nodes):
                return False
        return True
    raise TypeError(f"not a pattern: {pattern!r}")


def match(pattern: Any, node: fx.Node) -> Match | None:
    """The match of ``pattern`` rooted at ``node``, or ``None``. Inner op nodes must be used only
    inside the match."""
    captures: Captures = {}
    nodes: list[fx.Node] = []
    if not _match(pattern, node, captures, nodes):
        return None
    inside = set(nodes)
    escapes = next((inner for inner in nodes[1:] if any(user not in inside for user in inner.users)), None)
    return Match(node, captures, nodes, escapes)


def find_matches(graph: fx.Graph, pattern: Any, roots: tuple) -> list[Match]:
    """Matches of ``pattern`` rooted at the call nodes whose target is in ``roots``, in graph order;
    nodes already taken by an earlier match are not matched again."""
    found: list[Match] = []
    taken: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in roots or node in taken:
            continue
        result = match(pattern, node)
        if result is not None and not taken.intersection(result.nodes):
            found.append(result)
            taken.update(result.nodes)
    return found
