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

    @property
    def nodes(self) -> list[fx.Node]:
        return [self.node]

    def reads(self) -> list[fx.Node]:
        return self.node.all_input_nodes

    def produces(self) -> list[fx.Node]:
        return [self.node]


@dataclass
class FusionGroup:
    """Nodes computed by one generated kernel.

    ``space`` is the iteration space (sizes, ints or SymInts); ``reduced`` the iteration dims a
    REDUCTION group reduces. ``dim_maps[node][k]`` is the iteration dim that the node's dim ``k``
    runs along, or ``None`` where the node has size 1 (broadcast). ``outputs`` are the members read
    outside the group; ``output_copies[node]`` > 1 when the graph returns that value several times
    (the kernel writes one buffer per occurrence, so autograd never clones them)."""

    name: str
    kind: str  # "pointwise" | "reduction" | "gemm" (the mm / addmm / bmm and its epilogue) | "conv" (a depthwise convolution and its epilogue)
    nodes: list[fx.Node]
    inputs: list[fx.Node]
    outputs: list[fx.Node]
    space: tuple
    reduced: tuple[int, ...]
    dim_maps: dict[fx.Node, tuple]
    output_copies: dict[fx.Node, int] = field(default_factory=dict)
    # inputs that are views of another tensor, read in place: view → (base, element offset of
    # the view in the base); the kernel indexes the base with the view's strides
    input_views: dict[fx.Node, tuple[fx.Node, int]] = field(default_factory=dict)
    view_chains: dict[fx.Node, list[fx.Node]] = field(default_factory=dict)  # view → views from its base
    # non-tensor values members take (symbolic sizes of a view): only the ATen path needs them
    scalar_inputs: list[fx.Node] = field(default_factory=list)
    # GEMM groups: the iteration dims the product's rows (M) run over, flattened row-major (one
    # dim, or the leading dims of a reshape [M, N] -> [d0, ..., dk, N] that the epilogue reads)
    gemm_rows: tuple[int, ...] = ()

    @property
    def node(self) -> fx.Node:
        return self.outputs[0]

    @property
    def aten_op(self) -> str | None:
        return None

    def reads(self) -> list[fx.Node]:
        """The buffers the kernel reads (the base of a view read in place)."""
        result: list[fx.Node] = []
        for node in self.inputs:
            read = self.input_views[node][0] if node in self.input_views else node
            if read not in result:
                result.append(read)
        return result + [n for n in self.scalar_inputs if n not in result]

    def produces(self) -> list[fx.Node]:
        return list(self.outputs)

    def op_names(self) -> list[str]:
        return [str(n.target) for n in self.nodes]


Step = ExternCall | FusionGroup


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
        """One line per step, with what it frees and the bytes alive while it runs
        (``passes/plan_memory.py``), and the plan's peak."""
        from ait_dynamo.passes.plan_memory import live_bytes  # it reads plans: imported late

        live = live_bytes(self) if self.frees_after else []  # lifetimes computed: bytes to show
        lines = [f"inputs: {', '.join(p.name for p in self.placeholders)}"]
        for index, step in enumerate(self.steps):
            if isinstance(step, FusionGroup):
                line = (
                    f"{index:4d} {step.kind} {step.name}: {', '.join(n.name for n in step.outputs)} = "
                    f"[{', '.join(n.name for n in step.nodes)}] over {tuple(step.space)}"
                    + (f" reducing dims {list(step.reduced)}" if step.reduced else "")
                )
            else:
                op = step.aten_op or getattr(step.node.target, "__name__", str(step.node.target))
                line = f"{index:4d} extern {step.name} = {op}"
            if self.frees_after.get(index):
                line += f"   free: {', '.join(n.name for n in self.frees_after[index])}"
            if live:
                line += f"   [live {_size(live[index])}]"
            lines.append(line)
        lines.append(f"output: {self.output.args[0]}")
        if live:
            peak = max(range(len(live)), key=live.__getitem__)
            lines.append(f"peak: {_size(live[peak])} alive at step {peak} (inputs and outputs included, "
                         "ATen workspaces not)")
        return "\n".join(lines) + "\n"


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):  # MiB above: steps compare at a glance
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def compute_lifetimes(plan: Plan) -> None:
    """Fill ``frees_after``: each buffer is freed right after the last step that reads it.

    Graph outputs are never freed; inputs no step reads are freed at entry. Constants (get_attr)
    live as long as the compiled graph and are never freed."""
    produced_by: dict[fx.Node, int] = {}
    last_use: dict[fx.Node, int] = {}
    for index, step in enumerate(plan.steps):
        for produced in step.produces():
            produced_by[produced] = index
        for used in step.reads():
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
