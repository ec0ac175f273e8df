"""A convolution's bias added by the kernel that reads its output, where kernels are generated.

ATen runs a biased CUDA convolution as the convolution and then ``output.add_(bias)``: a second
pass over the output, in its own launch. Written as ``convolution(x, w, None) + bias.view(1, C,
1, 1)``, the add joins the pointwise group that consumes the convolution (squeeze-excitation's
sigmoid, a BN, an activation) and costs nothing. EfficientNet-B0 has 32 biased convolutions a step
(its squeeze-excitation blocks): 32 ATen ``add`` kernels and launches on the H200 (profile of
758c61f). On CUDA the values are eager's: eager also rounds the convolution's output to its dtype
before adding the bias in float32, and rounds the sum. On the CPU that holds in float32 only (see
``_ROUNDED_ONCE_ON_CPU``).

Runs after the layout pass, whose rule counts the graph's nodes, and only where the add keeps the
convolution's exact layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import channel_shape, fake_result, meta_value, same_tensor_layout

aten = torch.ops.aten

# On the CPU, eager's half-precision convolutions add the bias inside (oneDNN, or the slow path's
# float32 accumulator) and round once; split, the output would be rounded before the bias and again
# after. A training batch norm over few values per channel amplifies that: random convnet seed 437
# (float16, 9 values a channel) had its input gradient's RMSE against float64 at 4.6x eager's split,
# 1.0x not (benchmarks/results/cpu-triton-interpreter/random_programs/). In float32 the second
# rounding is below the tolerances; on CUDA eager itself rounds twice (cuDNN, then add_).
_ROUNDED_ONCE_ON_CPU = (torch.float16, torch.bfloat16)


def split_convolution_bias(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if not getattr(config, "fusion", True):  # each op is its own ATen call: keep cuDNN's/oneDNN's bias
        return gm
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.convolution.default or node.kwargs:
            continue
        bias = node.args[2] if len(node.args) > 2 else None
        value, bias_value = meta_value(node), meta_value(bias) if isinstance(bias, fx.Node) else None
        if not isinstance(value, torch.Tensor) or not isinstance(bias_value, torch.Tensor) or bias_value.dim() != 1:
            continue
        if not value.dtype.is_floating_point or bias_value.dtype != value.dtype or value.dim() < 3:
            continue
        if value.dtype in _ROUNDED_ONCE_ON_CPU and value.device.type != "cuda":
            continue
        shape = channel_shape(bias_value.shape[0], value.dim())
        graph = gm.graph
        with graph.inserting_after(node):
            unbiased = graph.call_function(aten.convolution.default, (node.args[0], node.args[1], None, *node.args[3:]))
        with graph.inserting_after(unbiased):
            column = graph.call_function(aten.view.default, (bias, shape))
        with graph.inserting_after(column):
            added = graph.call_function(aten.add.Tensor, (unbiased, column))
        unbiased.meta = dict(node.meta)
        unbiased.meta["val"] = fake_result(aten.convolution.default, unbiased.args)
        column.meta["val"] = fake_result(aten.view.default, column.args)
        added.meta = dict(node.meta)  # the convolution's provenance (the fusion report names it)
        added.meta["val"] = fake_result(aten.add.Tensor, added.args)
        if not (same_tensor_layout(unbiased.meta["val"], value) and same_tensor_layout(added.meta["val"], value)):
            for new in (added, column, unbiased):
                graph.erase_node(new)
            continue
        node.replace_all_uses_with(added)
        graph.erase_node(node)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
