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

Where ``dy`` is the backward of a ReLU that only this batch norm reads (``where(y <= 0, 0, g)``:
conv-BN-ReLU, 33 of ResNet-50's 53 batch norms), the reduction reads ``g`` and ``y`` and applies
the ReLU's mask itself, and the input gradient's kernel computes the mask again: ``dy`` is never
written. As a kernel of its own it took 0.30 ms of ResNet-50's bf16 training step (batch 32,
H200); the step's kernels went from 7.93 to 7.68 ms, in two runs
(benchmarks/results/nvidia-h200/bn_relu_fold/).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx
from torch._subclasses.fake_tensor import FakeTensor

from ait_dynamo.kernels import batch_norm_channels, runtime
from ait_dynamo.passes.batch_norm_split import Inserter, channel_kernels_apply, fake_like, getitem_users
from ait_dynamo.passes.graph_utils import bound_arguments, channel_shape, meta_value, real_tensors, same_tensor_layout

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
    def channel(node: fx.Node) -> fx.Node:
        return add.node(aten.view.default, (node, shape))

    # ``dy`` and ``x`` are not cast: subtracting a float32 factor promotes them exactly, inside
    # the kernel that reads them. An explicit cast of a ``dy`` that two batch norms read (a
    # bottleneck's last one and its downsample's) joined dy's own kernel, which then wrote a
    # float32 copy, 12 MiB live at ResNet-50's peak (bf16, batch 32), read twice at 4 bytes.
    mean_dy, projection, scale = factors
    centred = add.node(aten.sub.Tensor, (x, channel(mean)))
    value = add.node(aten.sub.Tensor, (dy, channel(mean_dy)))
    value = add.node(aten.sub.Tensor, (value, add.node(aten.mul.Tensor, (centred, channel(projection)))))
    value = add.node(aten.mul.Tensor, (value, channel(scale)))
    if dtype != torch.float32:
        value = add.node(aten._to_copy.default, (value,), {"dtype": dtype})
    return value


def _is_zero(gm: fx.GraphModule, value: Any) -> bool:
    if isinstance(value, fx.Node) and value.op == "get_attr":  # a folded constant (a real tensor)
        value = operator.attrgetter(str(value.target))(gm)
    if isinstance(value, torch.Tensor):
        if isinstance(value, FakeTensor) or value.numel() != 1 or value.is_complex():
            return False
        with real_tensors():  # passes run inside the compile's fake mode
            return value.item() == 0
    return isinstance(value, (int, float)) and value == 0


def _exact_in(threshold: Any, dtype: torch.dtype) -> bool:
    """True where ``threshold`` is a number that ``dtype`` holds exactly: then comparing in float32
    inside our kernel gives what ATen's comparison in ``dtype`` gives."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not dtype.is_floating_point:
        return False
    with real_tensors():
        return float(torch.tensor(threshold, dtype=dtype)) == threshold


def _relu_backward(gm: fx.GraphModule, dy: Any, node: fx.Node, config: Any) -> tuple[fx.Node, fx.Node, float] | None:
    """``(gradient, gate, threshold)`` where ``dy`` is a ReLU's backward,
    ``where(gate <= threshold, 0, gradient)`` (as AOTAutograd decomposes ``threshold_backward``, or
    that op itself), read by this batch norm's backward alone: folded into the reduction, it is
    never written, and the input gradient's kernel computes it again. Else ``None``."""
    if not isinstance(dy, fx.Node) or dy.op != "call_function" or set(dy.users) != {node}:
        return None
    if dy.target is aten.threshold_backward.default:
        gradient, gate, threshold = dy.args[:3]
    elif dy.target is aten.where.self and _is_zero(gm, dy.args[1]):
        condition, gradient = dy.args[0], dy.args[2]
        if not (isinstance(condition, fx.Node) and condition.op == "call_function"
                and condition.target is aten.le.Scalar):
            return None
        gate, threshold = condition.args[:2]
    else:
        return None
    if not (isinstance(gradient, fx.Node) and isinstance(gate, fx.Node)):
        return None
    dy_value, gradient_value, gate_value = meta_value(dy), meta_value(gradient), meta_value(gate)
    if not all(channel_kernels_apply(v, config) for v in (gradient_value, gate_value)):
        return None
    if gradient_value.dtype != dy_value.dtype or not _exact_in(threshold, gate_value.dtype):
        return None
    if not tuple(gradient_value.shape) == tuple(gate_value.shape) == tuple(dy_value.shape):
        return None
    return gradient, gate, float(threshold)


def _split(gm: fx.GraphModule, node: fx.Node, bound: dict[str, Any], outputs: dict[int, fx.Node], config: Any) -> bool:
    graph = gm.graph
    dy, x, weight = bound["grad_out"], bound["input"], bound["weight"]
    x_value = meta_value(x)
    channels = x_value.shape[1]
    shape = channel_shape(channels, x_value.dim())
    factor = fake_like(x_value, (channels,), torch.float32)
    grad = fake_like(x_value, (channels,), meta_value(weight).dtype) if weight is not None else None
    grid = batch_norm_channels.channel_grid(x_value.numel() // channels, channels, runtime.multiprocessors([x_value]))
    add = Inserter(graph, node)
    arguments = (dy, x, bound["save_mean"], bound["save_invstd"], weight, grid.fields())
    relu_backward = _relu_backward(gm, dy, node, config)
    if relu_backward is not None:
        gradient, gate, threshold = relu_backward
        arguments = (gradient, *arguments[1:], gate, threshold)
    sums = add.node(batch_norm_channels.channel_gradient_sums, arguments, val=(factor, factor, factor, grad, grad))
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
            changed |= _split(gm, node, bound, outputs, config)
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
