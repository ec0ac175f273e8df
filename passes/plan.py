"""The plan: what the generated wrapper runs, in order, and when each buffer dies."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx


@dataclass(frozen=True)
class ExternCall:
    """One FX node run through torch (an aten op via ATen, a symbolic-size expression, ...)."""

    node: fx.Node

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def aten_op(self) -> str | None:
        """``"aten.mm.default"`` for an op overload, ``None`` for Python-level work."""
        target = self.node.target
        if isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            return str(target) if isinstance(target, torch._ops.OpOverload) else f"higher_order.{target.name()}"
        return None


Step = ExternCall


@dataclass
class Plan:
    """Ordered steps over one graph plus, per step, the buffers that die after it."""

    graph: fx.Graph
    placeholders: list[fx.Node]
    steps: list[Step]
    output: fx.Node
    frees_after: dict[int, list[fx.Node]] = field(default_factory=dict)  # step index → buffers
    unused_inputs: list[fx.Node] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"inputs: {', '.join(p.name for p in self.placeholders)}"]
        for index, step in enumerate(self.steps):
            op = step.aten_op or getattr(step.node.target, "__name__", str(step.node.target))
            line = f"{index:4d} extern {step.name} = {op}"
            if self.frees_after.get(index):
                line += f"   free: {', '.join(n.name for n in self.frees_after[index])}"
            lines.append(line)
        lines.append(f"output: {self.output.args[0]}")
        return "\n".join(lines) + "\n"


def compute_lifetimes(plan: Plan) -> None:
    """Fill ``frees_after``: each buffer is freed right after the last step that reads it.

    Graph outputs are never freed; inputs no step reads are freed at entry. Constants (get_attr)
    live as long as the compiled graph and are never freed."""
    produced_by: dict[fx.Node, int] = {}
    last_use: dict[fx.Node, int] = {}
    for index, step in enumerate(plan.steps):
        produced_by[step.node] = index
        for used in step.node.all_input_nodes:
            last_use[used] = index
    outputs = set(plan.output.all_input_nodes)
    plan.frees_after = {}
    for node, index in produced_by.items():
        if node in outputs or node.op == "get_attr":
            continue
        plan.frees_after.setdefault(last_use.get(node, index), []).append(node)
    for node, index in last_use.items():
        if node.op == "placeholder" and node not in outputs:
            plan.frees_after.setdefault(index, []).append(node)
    plan.unused_inputs = [p for p in plan.placeholders if p not in last_use and p not in outputs]
    for nodes in plan.frees_after.values():
        nodes.sort(key=lambda n: n.name)
