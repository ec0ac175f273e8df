"""Training batch norm updates its running statistics in place, as eager does.

AOTAutograd's forward graph is functional. ``nn.BatchNorm2d`` in training becomes
``_native_batch_norm_legit_functional``, and ATen runs that op as a clone of both running
statistics, then the in-place ``_native_batch_norm_legit`` on the clones. The graph then copies the
clones back into the module's buffers (``copy_``). That is four copies per layer that eager never
makes. ResNet-50's bf16 training step on the H200 ran 265 device-to-device copies (0.27 ms of
kernels, and each one a host call on a host-bound step) where Inductor ran none:
benchmarks/results/nvidia-h200/depthwise/resnet50_train_profile_ait_8204cd8.txt.

Two rewrites, both exact:

1. On the joint graph, before the partition (:func:`backward_reads_no_statistics`): the joint
   graph passes the *new* running statistics to ``native_batch_norm_backward``, which with
   ``train=True`` never reads them. ATen's CPU and CUDA kernels and torch's decomposition use
   the saved batch statistics in training mode. Their arguments are optional, and
   ``track_running_stats=False`` passes ``None``, so this passes ``None`` too. The new statistics
   are left with one reader each: their copy back. Nothing is saved for them any more.
   Passing the buffers instead would make autograd's version check fail on two forwards before
   their backwards (tests/test_batch_norm_stats.py).
2. On the forward graph (:func:`update_batch_norm_stats_in_place`): the in-place op is called on
   the buffers themselves and the copies back are dropped. The values are bit for bit the
   same, because the functional op is that in-place op on copies. The rewrite applies only
   where nothing can tell the difference:
   * both running statistics are graph inputs (the module's buffers);
   * each new statistic is read by exactly one ``copy_`` into its own buffer, and that copy's
     result is unused;
   * nothing else in the graph reads either buffer, so no reader sees the update earlier than it
     would have.
3. Also on the forward graph (:func:`_increment_counters_together`): each layer's
   ``num_batches_tracked += 1`` is, functionally, an add and a copy back. Where nothing else
   reads a counter, all of them are incremented in place by one ``_foreach_add_``. Eager
   increments in place too, so the values are the same.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import bound_arguments

aten = torch.ops.aten

_FUNCTIONAL = aten._native_batch_norm_legit_functional.default
_IN_PLACE = aten._native_batch_norm_legit.default
_BACKWARD = aten.native_batch_norm_backward.default
_NEW_STATS = (3, 4)  # the functional op's outputs: new running mean, new running var


def _training_statistics(node: fx.Node) -> tuple[Any, Any] | None:
    """A training-mode functional batch norm's (running_mean, running_var) arguments."""
    bound = bound_arguments(node)
    if bound.get("training") is not True:
        return None
    return bound.get("running_mean"), bound.get("running_var")


def backward_reads_no_statistics(joint: fx.GraphModule) -> int:
    """Rewrite 1 (see the module docstring); how many backward ops it changed."""
    rewritten = 0
    for node in joint.graph.nodes:
        if node.op != "call_function" or node.target is not _BACKWARD or len(node.args) < 5:
            continue
        if bound_arguments(node).get("train") is not True:
            continue
        if not all(_is_training_statistic(node.args[index], index) for index in _NEW_STATS):
            continue
        node.args = node.args[:3] + (None, None) + node.args[5:]
        rewritten += 1
    return rewritten


def _is_training_statistic(value: Any, index: int) -> bool:
    """``value`` is output ``index`` (a new running statistic) of a training-mode functional batch norm."""
    if not (isinstance(value, fx.Node) and value.target is operator.getitem and value.args[1] == index):
        return False
    forward = value.args[0]
    return isinstance(forward, fx.Node) and forward.target is _FUNCTIONAL and _training_statistics(forward) is not None


def copy_back(value: fx.Node | None, buffer: Any) -> fx.Node | None:
    """The single ``copy_(buffer, value)`` that is ``value``'s only use, or ``None``."""
    if value is None or len(value.users) != 1:
        return None
    (copy,) = value.users
    if copy.target is not aten.copy_.default or copy.users or copy.kwargs:
        return None
    if len(copy.args) != 2 or copy.args[0] is not buffer or copy.args[1] is not value:
        return None
    return copy


def _rewrite(gm: fx.GraphModule, node: fx.Node) -> bool:
    stats = _training_statistics(node)
    if stats is None:
        return False
    running_mean, running_var = stats
    if not all(isinstance(s, fx.Node) and s.op == "placeholder" for s in stats) or running_mean is running_var:
        return False
    if any(user.target is not operator.getitem for user in node.users):
        return False
    outputs: dict[int, fx.Node] = {}
    for user in node.users:
        if user.args[1] in outputs:
            return False
        outputs[user.args[1]] = user
    copies = [copy_back(outputs.get(index), buffer) for index, buffer in zip(_NEW_STATS, stats)]
    if any(copy is None for copy in copies):
        return False
    for buffer, copy in zip(stats, copies):
        if set(buffer.users) != {node, copy}:
            return False
    with gm.graph.inserting_before(node):
        in_place = gm.graph.call_function(_IN_PLACE, node.args, dict(node.kwargs))
    in_place.meta = dict(node.meta)
    value = node.meta.get("val")
    if isinstance(value, (tuple, list)):
        in_place.meta["val"] = tuple(value[:3])
    for index, getter in outputs.items():
        if index not in _NEW_STATS:
            getter.args = (in_place, index)
    for copy in copies:
        gm.graph.erase_node(copy)
    for index in _NEW_STATS:
        gm.graph.erase_node(outputs[index])
    gm.graph.erase_node(node)
    return True


def _counter_increment(copy: fx.Node) -> tuple[fx.Node, Any] | None:
    """``(buffer, step)`` where ``copy`` is ``copy_(buffer, add(buffer, step))``, a graph input
    incremented by a number and read by nothing else (batch norm's ``num_batches_tracked``)."""
    if copy.target is not aten.copy_.default or copy.users or copy.kwargs or len(copy.args) != 2:
        return None
    buffer, increment = copy.args
    if not (isinstance(buffer, fx.Node) and buffer.op == "placeholder" and isinstance(increment, fx.Node)):
        return None
    if increment.target is not aten.add.Tensor or increment.kwargs or len(increment.args) != 2:
        return None
    if increment.args[0] is not buffer or copy_back(increment, buffer) is not copy:
        return None
    step = increment.args[1]
    if not isinstance(step, (int, float)) or isinstance(step, bool) or set(buffer.users) != {increment, copy}:
        return None
    return buffer, step


def _increment_counters_together(gm: fx.GraphModule) -> int:
    """Every ``copy_(counter, add(counter, step))`` of the graph as one in-place
    ``_foreach_add_`` per (device, dtype, step), where the last of them was: eager increments
    each batch norm's ``num_batches_tracked`` in place; the functional graph made that an add and
    a copy back per layer (ResNet-50's training step: 53 ATen copies, besides the adds), where
    the foreach op is one launch. Nothing else reads the counters, so when they change within
    the call is invisible."""
    groups: dict[tuple, list[tuple[fx.Node, fx.Node]]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        found = _counter_increment(node)
        value = found[0].meta.get("val") if found else None
        if found is None or not isinstance(value, torch.Tensor):
            continue
        groups.setdefault((value.device, value.dtype, found[1]), []).append((found[0], node))
    merged = 0
    for (_, _, step), members in groups.items():
        with gm.graph.inserting_after(members[-1][1]):
            together = gm.graph.call_function(aten._foreach_add_.Scalar, ([buffer for buffer, _ in members], step))
        together.meta["val"] = None
        for _, copy in members:
            increment = copy.args[1]
            gm.graph.erase_node(copy)
            gm.graph.erase_node(increment)
        merged += len(members)
    return merged


def update_batch_norm_stats_in_place(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """Rewrite 2 (see the module docstring), and the layers' step counters incremented in one op."""
    rewritten = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is _FUNCTIONAL:
            rewritten += _rewrite(gm, node)
    rewritten += _increment_counters_together(gm)
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return gm
