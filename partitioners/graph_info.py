"""Facts about a joint forward+backward graph that the partitioner needs: which nodes the forward
must compute, which only the backward can compute, and how many bytes each value occupies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx
from torch.utils import _pytree as pytree

from ait_dynamo.partitioners.op_classes import OpClass, op_class
from ait_dynamo.passes.graph_utils import mutated_placeholders

# Size assumed for a symbolic dimension that has no hint (an unbacked symbol).
UNHINTED_DIM = 4096
SYMBOLIC_SCALAR_BYTES = 8


def size_hint(value: int | torch.SymInt) -> int:
    """A concrete number for a (possibly symbolic) size: its hint, as the partitioner plans for it."""
    if isinstance(value, int):
        return value
    node = getattr(value, "node", None)
    hint = getattr(node, "hint", None)
    if hint is not None:
        return int(hint)
    try:
        return int(node.shape_env.size_hint(node.expr))  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - unbacked symbols have no hint at all
        return UNHINTED_DIM


def tensor_bytes(tensor: torch.Tensor) -> int:
    numel = 1
    for dim in tensor.shape:
        numel *= size_hint(dim)
    return numel * tensor.dtype.itemsize


def value_bytes(node: fx.Node) -> float:
    """Bytes one saved copy of ``node``'s value occupies; ``inf`` if it cannot be saved as it is
    (a tuple of tensors: its ``getitem`` users are saved instead)."""
    value = node.meta.get("val")
    if isinstance(value, torch.Tensor):
        return tensor_bytes(value)
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return SYMBOLIC_SCALAR_BYTES
    # Tuples, None, Python constants, opaque objects: not something the forward can hand over.
    return math.inf


def is_tensor_node(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), torch.Tensor)


def is_symbolic_node(node: fx.Node) -> bool:
    return isinstance(node.meta.get("val"), (torch.SymInt, torch.SymFloat, torch.SymBool))


def _is_tangent(node: fx.Node) -> bool:
    return node.op == "placeholder" and "tangents" in str(node.target)


def _is_bwd_seed_offset(node: fx.Node) -> bool:
    return node.op == "placeholder" and ("bwd_seed" in str(node.target) or "bwd_base_offset" in str(node.target))


def _must_be_in_backward(node: fx.Node) -> bool:
    tag = node.meta.get("partitioner_tag")
    if tag == "must_be_in_backward":
        return True
    mutable = isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable
    return tag == "is_backward" and mutable


@dataclass
class JointGraphInfo:
    """The joint graph split by what each node depends on.

    ``required_fw``: nodes the forward outputs need (computed from inputs alone).
    ``tangents_closure``: nodes that depend on a tangent: they exist only in the backward.
    ``required_bw``: ``tangents_closure`` plus the gradient outputs.
    Everything else is "unclaimed": it may run in either graph.
    """

    graph: fx.Graph
    inputs: list[fx.Node]
    static_inputs: set[fx.Node]
    fwd_outputs: list[Any]
    bwd_outputs: list[Any]
    required_fw: set[fx.Node] = field(default_factory=set)
    tangents_closure: set[fx.Node] = field(default_factory=set)
    required_bw: set[fx.Node] = field(default_factory=set)
    order: dict[fx.Node, int] = field(default_factory=dict)
    classes: dict[fx.Node, OpClass] = field(default_factory=dict)  # op_class of every node
    # Inputs the forward overwrites: never saved (the backward would read the new values)
    mutated_inputs: set[fx.Node] = field(default_factory=set)

    def is_unclaimed(self, node: fx.Node) -> bool:
        return node not in self.required_fw and node not in self.required_bw


def analyze_joint_graph(
    joint_module: fx.GraphModule, num_fwd_outputs: int, static_lifetime_input_indices: list[int] | None
) -> JointGraphInfo:
    graph = joint_module.graph
    output = next(iter(graph.find_nodes(op="output")))
    outputs = pytree.arg_tree_leaves(*output.args)
    placeholders = list(graph.find_nodes(op="placeholder"))
    inputs = [p for p in placeholders if not _is_tangent(p) and not _is_bwd_seed_offset(p)]
    primals = [p for p in inputs if "fwd_seed" not in str(p.target) and "fwd_base_offset" not in str(p.target)]
    static = {primals[i] for i in (static_lifetime_input_indices or []) if i < len(primals)}
    info = JointGraphInfo(
        graph=graph,
        inputs=inputs,
        static_inputs=static,
        fwd_outputs=outputs[:num_fwd_outputs],
        bwd_outputs=outputs[num_fwd_outputs:],
    )
    for index, node in enumerate(graph.nodes):
        info.order[node] = index
        info.classes[node] = op_class(node)

    closure = info.tangents_closure = backward_nodes(graph)
    info.mutated_inputs = forward_mutated_inputs(graph, closure)
    info.required_bw = set(closure)
    info.required_bw.update(o for o in info.bwd_outputs if isinstance(o, fx.Node) and o.op != "placeholder")

    # Backward walk from the forward outputs through nodes that do not need a tangent.
    stack = [o for o in info.fwd_outputs if isinstance(o, fx.Node)]
    while stack:
        node = stack.pop()
        if node in info.required_fw or node in closure:
            continue
        info.required_fw.add(node)
        stack.extend(node.all_input_nodes)
    info.required_fw.update(inputs)
    return info


def backward_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Everything downstream of a tangent (or of a node pinned to the backward)."""
    closure: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "output":
            continue
        if _is_tangent(node) or _is_bwd_seed_offset(node) or _must_be_in_backward(node):
            closure.add(node)
        elif any(arg in closure for arg in node.all_input_nodes):
            closure.add(node)
    return closure


def forward_mutated_inputs(graph: fx.Graph, backward: set[fx.Node]) -> set[fx.Node]:
    """Graph inputs that a forward op overwrites, directly or through a view: AOTAutograd keeps an
    input mutation in the joint graph as a ``copy_`` into the input at the end of the forward
    (or, for an input given a value that requires grad, copies it in after the forward). Nodes
    before it read the input's old value. The backward runs after it, so it must get what it
    needs of the old value saved, never the input itself (a probe of random in-place programs found
    our min-cut saving such an input and recomputing from it: wrong gradients)."""
    return mutated_placeholders(graph, skip=backward) | _inputs_mutated_outside_the_graph(graph)


def _inputs_mutated_outside_the_graph(graph: fx.Graph) -> set[fx.Node]:
    """Inputs whose new value the forward returns for AOTAutograd to copy in after it (an input
    that gets a value requiring grad): AOTAutograd's descriptors (torch 2.9+) name them on the
    output node. Saving one made the backward raise (autograd saw it modified in place)."""
    output = next(iter(graph.find_nodes(op="output")))
    descriptors = output.meta.get("desc")
    if not isinstance(descriptors, (list, tuple)):
        return set()
    mutated = {getattr(d, "mutated_input", None) for d in descriptors if type(d).__name__ == "InputMutationAOTOutput"}
    mutated.discard(None)
    if not mutated:
        return set()
    return {p for p in graph.find_nodes(op="placeholder") if p.meta.get("desc") in mutated}
