"""Write elementwise ATen calls into an input that dies there, where nothing is generated.

AOTAutograd's graphs are functional: ``nn.ReLU(inplace=True)`` becomes an out-of-place
``clamp_min`` that allocates its result. Where ait generates kernels, kernels reuse dying buffers
themselves (``kernels/reuse.py``). Where it does not (``fusion`` off: the CPU without Triton's
interpreter), each such op allocates, and on the CPU a fresh large buffer is fresh pages from
the OS. Measured with torch.profiler over 10 calls of ``benchmarks.run``'s encoder_block workload
(scale small, batch 8: its 8x64x1024 fp32 ReLU) on a 2-core CPU with torch 2.13: 1.06 ms a call out
of place against 0.07 ms in place. This pass turns ``op(x, ...)`` into
``op_(x, ...)`` when ``x`` is a buffer the graph made (not an input, not a view of anything),
nothing reads it afterwards, and the result has ``x``'s exact layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import may_alias_input, meta_value, same_tensor_layout

aten = torch.ops.aten

_IN_PLACE = {
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


def _dies_here(source: fx.Node, node: fx.Node, returned: set[fx.Node]) -> bool:
    return set(source.users) == {node} and source not in returned


def reinplace_dying_inputs(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if getattr(config, "fusion", True):
        return gm  # generated kernels reuse buffers themselves
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    returned = set(output.all_input_nodes)
    rewritten: set[fx.Node] = set()
    for node in gm.graph.nodes:
        target = _IN_PLACE.get(node.target) if node.op == "call_function" else None
        if target is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        # a fresh buffer: an op that allocates its result, or an op this pass made write into one
        fresh = source.op == "call_function" and (not may_alias_input(source) or source in rewritten)
        if not fresh or not _dies_here(source, node, returned):
            continue
        if not same_tensor_layout(meta_value(source), meta_value(node)):
            continue  # a broadcast or a type promotion: the result does not fit in the input
        node.target = target
        rewritten.add(node)
    if rewritten:
        gm.recompile()
    return gm
