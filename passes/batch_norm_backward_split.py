"""Training batch norm's backward as our channel reductions plus an input gradient the planner fuses.

ATen runs ``native_batch_norm_backward`` (``train=True``) on channels-last CUDA input as two
kernels: a reduction for the per-channel sums of ``dy`` and ``dy * (x - mean)`` (1.03 ms a step
in ResNet-50's bf16 training step at batch 32 on the H200, against a floor near 0.36 ms), then an
elementwise pass for the input gradient (0.74 ms), after which ait's kernels read that gradient
again for the residual branch's sum (benchmarks/results/nvidia-h200/depthwise/).

This pass, the mirror of ``passes/batch_norm_split.py``:

* ``channel_gradient_sums`` (``kernels/batch_norm_channels.py``) reduces the two sums and returns
  the weight and bias gradients plus three per-channel factors;
* the input gradient ``(dy - mean_dy - (x - mean) * projection) * scale`` (ATen's formula, in
  float32, cast to the input's dtype) becomes graph ops, which join the kernel of whatever reads
  or feeds them (the residual gradient's add, a cast).

It applies where ``dy`` and ``x`` are rows of channels on a device Triton runs on (the same rule as
the forward's statistics), with static sizes, and where the traced input gradient has the layout
the graph ops give; otherwise ATen's op stays.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels import batch_norm_channels, runtime
from ait_dynamo.passes.batch_norm_split import Inserter, channel_kernels_apply, fake_like, getitem_users
from ait_dynamo.passes.graph_utils import bound_arguments, meta_value, same_tensor_layout

aten = torch.ops.aten

_BACKWARD = aten.native_batch_norm_backward.default


def _applies(bound: dict[str, Any], outputs: dict[int, fx.Node], config: Any) -> bool:
    if bound.get("train") is not True:
        return False
    x, dy = meta_value(bound["input"]), meta_value(bound["grad_out"])
    if not (channel_kernels_apply(x, config) and channel_kernels_apply(dy, config)):
        return False
    if tuple(x.shape) != tuple(dy.shape):
        return False
    for name in ("save_mean", "save_invstd"):
        value = meta_value(bound[name])
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float32 or tuple(value.shape) != (x.shape[1],):
            return False
    weight = bound["weight"]
    weight_value = meta_value(weight)
    if weight is None:
        return not any(i in outputs and outputs[i].users for i in (1, 2))  # nothing reads a weight gradient
    if not isinstance(weight_value, torch.Tensor) or tuple(weight_value.shape) != (x.shape[1],):
        return False
    for i in (1, 2):  # the gradients come out in the weight's dtype, as ATen's do
        value = meta_value(outputs.get(i)) if i in outputs else None
        if value is not None and (not isinstance(value, torch.Tensor) or value.dtype != weight_value.dtype):
            return False
    return True


def _input_gradient(add: Inserter, dy: fx.Node, x: fx.Node, mean: fx.Node, factors: list[fx.Node],
                    dtype: torch.dtype, shape: list[int]) -> fx.Node:
    def as_float(node: fx.Node) -> fx.Node:
        if meta_value(node).dtype == torch.float32:
            return node
        return add.node(aten._to_copy.default, (node,), {"dtype": torch.float32})

    def channel(node: fx.Node) -> fx.Node:
        return add.node(aten.view.default, (node, shape))

    mean_dy, projection, scale = factors
    centred = add.node(aten.sub.Tensor, (as_float(x), channel(mean)))
    value = add.node(aten.sub.Tensor, (as_float(dy), channel(mean_dy)))
    value = add.node(aten.sub.Tensor, (value, add.node(aten.mul.Tensor, (centred, channel(projection)))))
    value = add.node(aten.mul.Tensor, (value, channel(scale)))
    if dtype != torch.float32:
        value = add.node(aten._to_copy.default, (value,), {"dtype": dtype})
    return value


def _split(graph: fx.Graph, node: fx.Node, bound: dict[str, Any], outputs: dict[int, fx.Node]) -> bool:
    dy, x, weight = bound["grad_out"], bound["input"], bound["weight"]
    x_value = meta_value(x)
    channels = x_value.shape[1]
    shape = [1, channels] + [1] * (x_value.dim() - 2)
    factor = fake_like(x_value, (channels,), torch.float32)
    grad = fake_like(x_value, (channels,), meta_value(weight).dtype) if weight is not None else None
    grid = batch_norm_channels.channel_grid(x_value.numel() // channels, channels, runtime.multiprocessors([x_value]))
    add = Inserter(graph, node)
    sums = add.node(batch_norm_channels.channel_gradient_sums,
                    (dy, x, bound["save_mean"], bound["save_invstd"], weight, grid.fields()),
                    val=(factor, factor, factor, grad, grad))
    factors = [add.node(operator.getitem, (sums, i), val=factor) for i in range(3)]
    input_gradient = outputs.get(0)
    if input_gradient is not None and input_gradient.users:
        traced = meta_value(input_gradient)
        value = _input_gradient(add, dy, x, bound["save_mean"], factors, traced.dtype, shape)
        if not same_tensor_layout(meta_value(value), traced):
            add.undo()  # the graph ops would not give the traced layout: keep ATen's op
            return False
        input_gradient.replace_all_uses_with(value)
    for i in (1, 2):
        if i in outputs and outputs[i].users:
            outputs[i].replace_all_uses_with(add.node(operator.getitem, (sums, i + 2), val=grad))
    for user in list(node.users):
        graph.erase_node(user)
    graph.erase_node(node)
    return True


def split_training_batch_norm_backward(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if not getattr(config, "fusion", True) or getattr(config, "fused_batch_norm_training", False):
        return gm
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not _BACKWARD:
            continue
        bound = bound_arguments(node)
        outputs = getitem_users(node)
        if outputs is not None and _applies(bound, outputs, config):
            changed |= _split(gm.graph, node, bound, outputs)
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
