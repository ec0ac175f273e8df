"""What saving a value costs (bytes) and what recomputing it costs (estimated nanoseconds).

Each node gets a :class:`Recompute` policy:

* ``FREE``: views, and fusible ops whose recompute fuses into a backward kernel. The partitioner
  recomputes these whenever that saves bytes (the recompute rides along in a kernel the backward
  runs anyway).
* ``COSTLY``: compute-intensive ops (mm, bmm, convolution, attention), deterministic ops the planner
  does not fuse, and fusible ops whose recompute would be a kernel of its own. Banned by default;
  under a memory budget they are recomputed at their estimated time, cheapest time per byte first.
* ``NEVER``: ops drawing from the global RNG (a recompute would draw different numbers), ops with
  side effects, and values the user's checkpoint policy says to save.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import fx

from ait_dynamo.partitioners.graph_info import JointGraphInfo, size_hint, value_bytes
from ait_dynamo.partitioners.op_classes import FUSIBLE, OpClass
from ait_dynamo.passes.host_scalars import computed_from_host_scalars

# A rough accelerator: enough to rank recomputes against each other, not to predict step time.
BYTES_PER_NS = 2000.0  # ~2 TB/s of memory bandwidth
FLOPS_PER_NS = 400_000.0  # ~400 TFLOP/s of dense bf16 matrix math
LAUNCH_NS = 3000.0  # one extra kernel launch and its tail


class Recompute(enum.Enum):
    FREE = "free"
    COSTLY = "costly"
    NEVER = "never"


@dataclass(frozen=True)
class NodeCost:
    op_class: OpClass
    recompute: Recompute
    save_bytes: float  # capacity of saving this value; inf when it cannot be saved
    recompute_ns: int  # estimated time of one recompute in the backward
    reason: str  # why this policy (shown in the report)


def _checkpoint_policy(node: fx.Node) -> str | None:
    policy = node.meta.get("recompute")
    return getattr(policy, "name", None) if policy is not None else None


def _flops(node: fx.Node) -> float:
    from torch.utils.flop_counter import flop_registry

    target = node.target
    packet = target.overloadpacket if isinstance(target, torch._ops.OpOverload) else target
    formula = flop_registry.get(packet)
    if formula is None:
        return 0.0

    def value(arg: object) -> object:
        return arg.meta.get("val") if isinstance(arg, fx.Node) else arg

    try:
        args = torch.utils._pytree.tree_map(value, node.args)
        kwargs = torch.utils._pytree.tree_map(value, node.kwargs)
        return float(size_hint(formula(*args, out_val=node.meta.get("val"), **kwargs)))
    except Exception:  # noqa: BLE001 - an unusual signature: fall back to the memory estimate
        return 0.0


def estimate_recompute_ns(node: fx.Node, kind: OpClass) -> int:
    """Time to recompute ``node`` as a kernel of its own: read its inputs, write its output, do
    its FLOPs, plus one launch."""
    moved = sum(value_bytes(arg) for arg in node.all_input_nodes if math.isfinite(value_bytes(arg)))
    out = value_bytes(node)
    if not math.isfinite(out):
        out = sum(value_bytes(user) for user in node.users if math.isfinite(value_bytes(user)))
    memory_ns = (moved + out) / BYTES_PER_NS
    compute_ns = _flops(node) / FLOPS_PER_NS if kind == OpClass.COMPUTE_INTENSIVE else 0.0
    return max(1, int(max(memory_ns, compute_ns) + LAUNCH_NS))


def _feeds_fusible_kernel(node: fx.Node, info: JointGraphInfo, depth: int = 4) -> bool:
    """Whether some consumer (looking through views) is a fusible op: then a recompute of
    ``node`` becomes part of that consumer's kernel."""
    for user in node.users:
        kind = info.classes.get(user)
        if kind in FUSIBLE:
            return True
        if kind == OpClass.VIEW and depth > 0 and _feeds_fusible_kernel(user, info, depth - 1):
            return True
    return False


def _has_fusible_backward_sibling(node: fx.Node, info: JointGraphInfo) -> bool:
    """Whether a backward kernel already reads one of ``node``'s inputs elementwise: a recompute
    of ``node`` joins that kernel as a second output (the planner fuses consumers of one input).
    Backward kernels are those of the tangent-dependent nodes and of the nodes no forward output
    needs (such as the tangent-free half of an activation's derivative)."""
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return False
    for arg in node.all_input_nodes:
        for sibling in arg.users:
            if sibling is not node and sibling not in info.required_fw and info.classes.get(sibling) in FUSIBLE:
                sibling_value = sibling.meta.get("val")
                if isinstance(sibling_value, torch.Tensor) and sibling_value.shape == value.shape:
                    return True
    return False


def node_cost(node: fx.Node, info: JointGraphInfo) -> NodeCost:
    kind = info.classes[node]
    size = value_bytes(node)
    if node in info.static_inputs:
        size = 0.0  # parameters and buffers stay alive anyway: saving them costs nothing
    policy = _checkpoint_policy(node)
    if kind == OpClass.PLACEHOLDER:
        return NodeCost(kind, Recompute.NEVER, size, 0, "graph input")
    if kind == OpClass.VIEW:
        # getitem of a multi-output op is the only way to save one of its outputs
        savable = node.target.__name__ == "getitem" if callable(node.target) else False
        return NodeCost(kind, Recompute.FREE, size if savable else math.inf, 0, "view: recomputed from its base")
    if policy in ("MUST_SAVE", "PREFER_SAVE"):
        return NodeCost(kind, Recompute.NEVER, size, 0, f"checkpoint policy {policy}")
    if policy == "MUST_RECOMPUTE":
        return NodeCost(kind, Recompute.FREE, math.inf, 0, "checkpoint policy MUST_RECOMPUTE")
    if kind == OpClass.RANDOM:
        return NodeCost(kind, Recompute.NEVER, size, 0, "random op without replayable RNG state: saved")
    if kind == OpClass.IMPURE:
        return NodeCost(kind, Recompute.NEVER, size, 0, "side effects or unknown op: never recomputed")
    inputs: set[fx.Node] = set()
    if kind in FUSIBLE and computed_from_host_scalars(node, inputs) and not inputs & info.mutated_inputs:
        # A float attribute's cast (Dynamo's 0-d float64 CPU tensor under dynamic=True): saved,
        # the forward would return it, a CPU result with two readers that no CUDA kernel computes,
        # so the planner refused its CUDA readers ("moves data between devices": the RMSNorm of
        # tests/test_dynamic_shapes.py compiled on an H100 to four kernels and two ATen calls, one
        # kernel on the CPU). The backward recomputes it from the input, which its kernel reads
        # by value (passes/host_scalars.py): the cut saves the input instead, a few bytes more.
        return NodeCost(kind, Recompute.FREE, math.inf, 0, "host scalar: recomputed from its inputs, read by value")
    recompute_ns = estimate_recompute_ns(node, kind)
    if kind in FUSIBLE:
        if _feeds_fusible_kernel(node, info) or _has_fusible_backward_sibling(node, info):
            return NodeCost(kind, Recompute.FREE, size, recompute_ns, "fusible: recompute fuses into a backward kernel")
        return NodeCost(kind, Recompute.COSTLY, size, recompute_ns, "recompute would not fuse into a backward kernel")
    if kind == OpClass.COMPUTE_INTENSIVE:
        return NodeCost(kind, Recompute.COSTLY, size, recompute_ns, "compute-intensive")
    return NodeCost(kind, Recompute.COSTLY, size, recompute_ns, "not fused by the planner")
