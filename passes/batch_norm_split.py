"""Training batch norm on CUDA: ATen's statistics kernel, and a normalisation the planner fuses.

ATen runs ``_native_batch_norm_legit_functional`` (``training=True``) on CUDA as three kernels:
the per-channel statistics (Welford, its channels-last kernel when the input is channels-last),
a small kernel that updates the running statistics and inverts the variance, and a pass over
the whole activation that normalises it. Then ait's kernel after it reads the normalised value
back for the ReLU or the residual add. In ResNet-50's bf16 training step on the H200, the
normalisation kernels took 0.57 ms of ATen's 3.72 ms of batch norm
(benchmarks/results/nvidia-h200/depthwise/resnet50_train_profile_ait_8204cd8.txt).

This pass keeps ATen's statistics and writes the rest as graph ops:

* ``batch_norm_stats(x, eps)``: the per-channel mean and inverse standard deviation, the same
  kernel ATen's batch norm runs. These are the values the backward reads (the op's outputs 1
  and 2).
* ``batch_norm_gather_stats_with_counts``, which ``SyncBatchNorm`` uses to update the running
  statistics from a mean and an inverse deviation. Here it runs with one "device" and a count
  of N x H x W. It writes both buffers in place, like eager's op.
  - Its running variance is the unbiased variance recovered from the inverse deviation. That
    differs from eager's by the rounding of one ``rsqrt``: a few float32 ulps of
    ``var + eps``, not bit for bit.
  - Its schema does not declare the writes. ``passes/graph_utils.py`` (``HIDDEN_WRITES``) lists
    them, so that the planner and CUDA graphs treat the buffers as mutated.
* ``weight * (x - mean) * invstd + bias`` in float32, cast back to x's dtype: ATen's order. It is
  pointwise, so it joins the kernel of the ReLU, add or cast that reads it.

The graph's copies of the new running statistics back into the buffers are dropped, because the
buffers are now written in place. The rewrite applies only where nothing can tell the
difference:

* the input is a CUDA tensor with a static count of more than one value per channel (ATen's
  error for a single value stays ATen's);
* both running statistics are graph inputs, and each new statistic is read only by its
  ``copy_`` back, whose result is unused;
* nothing else reads the buffers.

Where the input is laid out as rows of channels (channels-last) on a device Triton runs on, the
statistics and the running-statistics update are instead one launch of our kernel,
``channel_statistics`` (``kernels/batch_norm_channels.py``: 0.725 against ATen's 1.48 ms a step
on ResNet-50's shapes, H200), unless option ``batch_norm_reductions`` is ``"aten"``. It writes
the running statistics in place too (``HIDDEN_WRITES``), with the unbiased variance computed
directly. ``passes/batch_norm_backward_split.py`` does the same for the backward.

Not with ``fused_batch_norm_training``, which decomposes the whole op, nor with ``fusion=False``.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels import batch_norm_channels, runtime
from ait_dynamo.passes.batch_norm_stats import copy_back
from ait_dynamo.passes.graph_utils import (
    bound_arguments, channel_shape, fake_result, has_static_layout, meta_value, same_tensor_layout,
)

aten = torch.ops.aten

_FUNCTIONAL = aten._native_batch_norm_legit_functional.default
_HALF = (torch.float16, torch.bfloat16)


def getitem_users(node: fx.Node) -> dict[int, fx.Node] | None:
    """The op's ``getitem`` users by index; ``None`` if it has another kind of user or two of one."""
    found: dict[int, fx.Node] = {}
    for user in node.users:
        if user.target is not operator.getitem or user.args[1] in found:
            return None
        found[user.args[1]] = user
    return found


def channel_kernels_apply(value: Any, config: Any) -> bool:
    """True where our Triton reductions (``kernels/batch_norm_channels.py``) take a batch norm's
    input ``value``: dense rows of channels, static sizes, on a device Triton runs on."""
    return (getattr(config, "batch_norm_reductions", "triton") == "triton" and isinstance(value, torch.Tensor)
            and runtime.triton_runs_on(value.device.type) and has_static_layout(value)
            and batch_norm_channels.is_rows_of_channels(value))


def _rewritable(node: fx.Node, bound: dict[str, Any], outputs: dict[int, fx.Node], config: Any) -> list[fx.Node] | None:
    """The copies back to drop, where the rewrite applies; else ``None``."""
    value = meta_value(bound["input"])
    if not isinstance(value, torch.Tensor) or value.dim() < 2:
        return None
    if value.device.type != "cuda" and not channel_kernels_apply(value, config):
        return None
    if value.dtype not in _HALF + (torch.float32,):
        return None
    channels = value.shape[1]
    if not isinstance(channels, int) or not isinstance(value.numel(), int) or value.numel() // max(channels, 1) < 2:
        return None
    means = [meta_value(outputs[i]) for i in (1, 2) if i in outputs]
    if any(not isinstance(m, torch.Tensor) or m.dtype != torch.float32 for m in means):
        return None
    buffers = (bound["running_mean"], bound["running_var"])
    if not all(isinstance(b, fx.Node) and b.op == "placeholder" for b in buffers):
        return None
    copies = [copy_back(outputs.get(3), buffers[0]), copy_back(outputs.get(4), buffers[1])]
    if None in copies:
        return None
    for buffer in buffers:
        if any(user is not node and user not in copies for user in buffer.users):
            return None
    return copies


def fake_like(like: torch.Tensor, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An empty fake tensor in ``like``'s fake mode and device (a meta value for a new node)."""
    return fake_result(aten.empty.memory_format, (list(shape),), {"dtype": dtype, "device": like.device}, like=like)


def count_tensor(count: int, device: torch.device) -> torch.Tensor:
    """The values per channel, as ``batch_norm_gather_stats_with_counts`` takes them: a graph
    constant, so that no fill runs per call."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():  # passes run under AOTAutograd's fake mode; this is a real value
        return torch.full((1,), count, dtype=torch.float32, device=device)


class Inserter:
    """Adds nodes before ``anchor``, each with its meta value; :meth:`undo` removes them again."""

    def __init__(self, graph: fx.Graph, anchor: fx.Node):
        self.graph, self.anchor, self.added = graph, anchor, []

    def node(self, target: Any, args: tuple, kwargs: dict | None = None, val: Any = None, op: str = "call_function") -> fx.Node:
        with self.graph.inserting_before(self.anchor):
            new = self.graph.create_node(op, target, args, kwargs or {})
        new.meta["val"] = val if val is not None else fake_result(target, args, kwargs)
        self.added.append(new)
        return new

    def undo(self) -> None:
        for new in reversed(self.added):
            self.graph.erase_node(new)


def _split(gm: fx.GraphModule, node: fx.Node, bound: dict[str, Any], outputs: dict[int, fx.Node],
           copies: list[fx.Node], index: int, config: Any) -> bool:
    graph = gm.graph
    x, weight, bias, eps = bound["input"], bound["weight"], bound["bias"], bound["eps"]
    x_value = meta_value(x)
    channels = x_value.shape[1]
    stat = fake_like(x_value, (channels,), torch.float32)
    shape = channel_shape(channels, x_value.dim())
    add = Inserter(graph, node)
    count_name = None
    if channel_kernels_apply(x_value, config):
        grid = batch_norm_channels.channel_grid(x_value.numel() // channels, channels,
                                                runtime.multiprocessors([x_value]))
        stats = add.node(batch_norm_channels.channel_statistics,
                         (x, bound["running_mean"], bound["running_var"], bound["momentum"], eps, grid.fields()),
                         val=(stat, stat))
        mean = add.node(operator.getitem, (stats, 0), val=stat)
        invstd = add.node(operator.getitem, (stats, 1), val=stat)
    else:
        count_name = f"_batch_norm_count{index}"
        while hasattr(gm, count_name):
            count_name += "_"
        gm.register_buffer(count_name, count_tensor(x_value.numel() // channels, x_value.device), persistent=False)
        stats = add.node(aten.batch_norm_stats.default, (x, eps), val=(stat, stat))
        mean = add.node(operator.getitem, (stats, 0), val=stat)
        invstd = add.node(operator.getitem, (stats, 1), val=stat)
        counts = add.node(count_name, (), op="get_attr", val=fake_like(x_value, (1,), torch.float32))
        add.node(aten.batch_norm_gather_stats_with_counts.default,
                 (x, add.node(aten.view.default, (mean, channel_shape(channels, 2))),
                  add.node(aten.view.default, (invstd, channel_shape(channels, 2))),
                  bound["running_mean"], bound["running_var"], bound["momentum"], eps, counts), val=(stat, stat))
    normalised = outputs.get(0)
    if normalised is not None and normalised.users:
        value = _normalisation(add, x, x_value, mean, invstd, weight, bias, shape)
        if not same_tensor_layout(meta_value(value), meta_value(normalised)):
            add.undo()  # the normalisation would not have the traced layout: keep ATen's op
            if count_name is not None:
                delattr(gm, count_name)
            return False
        normalised.replace_all_uses_with(value)
    for position, replacement in ((1, mean), (2, invstd)):
        if position in outputs:
            outputs[position].replace_all_uses_with(replacement)
    for copy in copies:
        graph.erase_node(copy)
    for user in list(node.users):
        graph.erase_node(user)
    graph.erase_node(node)
    return True


def _normalisation(add: Inserter, x: fx.Node, x_value: torch.Tensor, mean: fx.Node, invstd: fx.Node,
                   weight: Any, bias: Any, shape: list) -> fx.Node:
    value = x
    if x_value.dtype != torch.float32:
        value = add.node(aten._to_copy.default, (x,), {"dtype": torch.float32})
    # ATen's order, weight * (x - mean) * invstd + bias (a product's operands commute exactly)
    value = add.node(aten.sub.Tensor, (value, add.node(aten.view.default, (mean, shape))))
    if weight is not None:
        value = add.node(aten.mul.Tensor, (value, add.node(aten.view.default, (weight, shape))))
    value = add.node(aten.mul.Tensor, (value, add.node(aten.view.default, (invstd, shape))))
    if bias is not None:
        value = add.node(aten.add.Tensor, (value, add.node(aten.view.default, (bias, shape))))
    if x_value.dtype != torch.float32:
        value = add.node(aten._to_copy.default, (value,), {"dtype": x_value.dtype})
    return value


def split_training_batch_norm(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    if not getattr(config, "fusion", True) or getattr(config, "fused_batch_norm_training", False):
        return gm
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not _FUNCTIONAL:
            continue
        bound = bound_arguments(node)
        outputs = getitem_users(node)
        if bound.get("training") is not True or outputs is None:
            continue
        copies = _rewritable(node, bound, outputs, config)
        if copies is not None and _split(gm, node, bound, outputs, copies, changed, config):
            changed += 1
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
