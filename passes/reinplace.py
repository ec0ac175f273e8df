"""Write elementwise ATen calls into an input that dies there, where nothing is generated.

AOTAutograd's graphs are functional: ``nn.ReLU(inplace=True)`` becomes an out-of-place
``clamp_min`` that allocates its result. Where ait generates kernels, kernels reuse dying buffers
themselves (``kernels/reuse.py``). Where it does not (``fusion`` off: the CPU without Triton's
interpreter), each such op allocates, and on the CPU a fresh large buffer is fresh pages from
the OS. Measured with torch.profiler over 10 calls of ``benchmarks.run``'s encoder_block workload
(scale small, batch 8: its 8x64x1024 fp32 ReLU) on a 2-core CPU with torch 2.13: 1.06 ms a call out
of place against 0.07 ms in place. This pass turns ``op(x, ...)`` into ``op_(x, ...)`` when:

* ``x`` is a buffer the graph made (not an input), or a view of one reached through views that
  nothing else uses (the encoder block's ReLU reads ``addmm(...).view(...)``: the product's last
  use, which eager's ``nn.ReLU(inplace=True)`` overwrites too);
* ``x`` dies there: every reader of the buffer, through any of its views, comes at or before this
  op in graph order (the plan keeps that order for them: ``passes/hoist.py`` moves steps only
  earlier, never past a write), and neither the buffer nor a view of it is returned;
* the result has ``x``'s exact layout; written through a view, the result is then a view, so it
  must not be one of the caller's outputs (the forward's values saved for the backward may be).

``add`` and ``mul`` also write into their second operand when only that one dies: the operation
commutes exactly in IEEE arithmetic, so the result is bit for bit the same (the tutorial's
backward ``tangent * -sin(x)`` writes into the ``-sin(x)`` it computed instead of a fresh buffer).
"""

from __future__ import annotations

import operator
from typing import Any, Sequence

import torch
from torch import fx

from ait_dynamo.partitioners import USER_OUTPUTS_META
from ait_dynamo.passes.graph_utils import is_mutating, may_alias_input, meta_value, same_tensor_layout

aten = torch.ops.aten

IN_PLACE = {
    aten.add.Tensor: aten.add_.Tensor,
    aten.sub.Tensor: aten.sub_.Tensor,
    aten.mul.Tensor: aten.mul_.Tensor,
    aten.div.Tensor: aten.div_.Tensor,
    aten.relu.default: aten.relu_.default,
    aten.clamp_min.default: aten.clamp_min_.default,
    aten.clamp.default: aten.clamp_.default,
    aten.sigmoid.default: aten.sigmoid_.default,
    aten.tanh.default: aten.tanh_.default,
    aten.exp.default: aten.exp_.default,
    aten.cos.default: aten.cos_.default,
    aten.sin.default: aten.sin_.default,
    aten.neg.default: aten.neg_.default,
    aten.gelu.default: aten.gelu_.default,
}


# Ops whose operands may be swapped without changing a bit of the result (with alpha 1 for add).
_COMMUTATIVE = {aten.add.Tensor, aten.mul.Tensor}


def _is_fresh(node: fx.Node, rewritten: set[fx.Node]) -> bool:
    """A buffer this graph allocated: an op that returns new memory, an element of a multi-output
    op that returns new memory (``native_layer_norm(...)[0]``), or an op this pass made write into
    such a buffer (its result is that buffer)."""
    if node.op != "call_function":
        return False
    if node in rewritten or not may_alias_input(node):
        return True
    if node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        producer = node.args[0]
        # another getitem of the same element would be the same tensor under another name
        twins = [u for u in producer.users if u is not node and u.target is operator.getitem and u.args[1:] == node.args[1:]]
        return producer.op == "call_function" and isinstance(producer.target, torch._ops.OpOverload) \
            and not may_alias_input(producer) and not twins
    return False


def _is_view(node: fx.Node) -> bool:
    """An aten view (``view``, ``transpose``, ``select`` ...): aliases its first argument, writes nothing."""
    return (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and may_alias_input(node) and not is_mutating(node) and bool(node.args) and isinstance(node.args[0], fx.Node))


def _aliases(base: fx.Node) -> set[fx.Node]:
    """``base`` and every value that may share its memory (views of views, in-place results)."""
    seen, stack = {base}, [base]
    while stack:
        for user in stack.pop().users:
            if user not in seen and (may_alias_input(user) or is_mutating(user)):
                seen.add(user)
                stack.append(user)
    return seen


class _Liveness:
    def __init__(self, gm: fx.GraphModule):
        nodes = list(gm.graph.nodes)
        self.position = {node: index for index, node in enumerate(nodes)}
        output = nodes[-1]
        assert output.op == "output", "an FX graph ends in its output node"
        values: Sequence[Any] = output.args[0] if isinstance(output.args[0], (tuple, list)) else (output.args[0],)
        self.returned = {v for v in values if isinstance(v, fx.Node)}
        user_count = gm.meta.get(USER_OUTPUTS_META)  # a forward: the rest is saved for the backward
        callers = values if user_count is None else values[:user_count]
        self.returned_to_caller = {v for v in callers if isinstance(v, fx.Node)}

    def writable(self, source: Any, node: fx.Node, rewritten: set[fx.Node]) -> bool:
        """Whether ``node`` may write its result into ``source`` (see the module doc)."""
        if not isinstance(source, fx.Node) or not same_tensor_layout(meta_value(source), meta_value(node)):
            return False  # a broadcast or a type promotion: the result does not fit in the input
        base = source
        while not _is_fresh(base, rewritten):
            if not _is_view(base) or len(base.users) != 1:
                return False  # an input, or a view that something else reads too
            base = base.args[0]
        if base is not source and node in self.returned_to_caller:
            return False
        here = self.position[node]
        for alias in _aliases(base):
            if alias in self.returned or self.position[alias] > here:
                return False  # returned, or written or viewed again later
            if any(self.position[user] > here for user in alias.users):
                return False  # read after this op
        return True


def reinplace_dying_inputs(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if getattr(config, "fusion", True):
        return gm  # generated kernels reuse buffers themselves
    liveness = _Liveness(gm)
    rewritten: set[fx.Node] = set()
    for node in gm.graph.nodes:
        target = IN_PLACE.get(node.target) if node.op == "call_function" else None
        if target is None or not node.args:
            continue
        if liveness.writable(node.args[0], node, rewritten):
            pass
        elif (node.target in _COMMUTATIVE and len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1
              and liveness.writable(node.args[1], node, rewritten)):
            node.args = (node.args[1], node.args[0])
        else:
            continue
        node.target = target
        rewritten.add(node)
    if rewritten:
        gm.recompile()
    return gm
