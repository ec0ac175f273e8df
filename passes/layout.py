"""Channels-last layout for convolutional graphs (issue 13, item 2).

cuDNN computes convolutions in NHWC. Handed NCHW tensors it transposes each input and output
(``nchwToNhwcKernel`` + ``nhwcToNchwKernel``: 0.57 ms of ResNet-50's 4.02 ms inference step at
batch 32 on the H200). This pass makes every 2-D convolution read channels-last activations and
lets that layout flow on through the graph, so that batch norm + ReLU + residual add read and
write NHWC, and nothing is transposed between one convolution and the next.

**When** (``decide``): option ``channels_last`` = ``"on"``, ``"off"``, or ``"auto"`` (default):
on for a *conv-dominated* graph on CUDA whose convolutions are fp16 or bf16, off elsewhere
(``"on"`` also turns float32 convolutions, which cuDNN then may run in TF32). Conv-dominated: it holds at least one
2-D convolution (``convolution`` or ``convolution_backward`` with a 4-d weight) per
``NODES_PER_CONVOLUTION`` (300) graph nodes: Inductor's threshold (``decide_layout_opt``), so that
a ViT's or Swin's single patch-embedding convolution among ~1,000 nodes does not turn the graph
channels-last, while ResNet, MobileNet, EfficientNet and ConvNeXt (one depthwise convolution per
block of ~30 nodes) are. Graphs with symbolic shapes are left alone in every mode.

**How the layout propagates** (``_Propagation``): nodes are visited in graph order. A convolution
whose activation (in the backward also the output gradient) is not channels-last gets a
``clone(memory_format=channels_last)`` in front of it. Every other node one of whose inputs changed
layout has its meta value recomputed on the fake tensors: it takes the strides ATen gives it
(pointwise ops follow their inputs' memory order, reductions keep it, pooling and batch norm follow
the input's memory format, convolutions return channels-last for channels-last input). The
generated kernels index and allocate by these meta strides (``kernels/codegen.py``), and a group
without a kernel runs the same ATen ops, so the planned layout is the one the tensors have. ATen
ops compute the same values for any input strides, except: calls other than ATen overloads
(``getitem`` aside), random ops (their random numbers follow memory order, and
``fallback_random=True`` promises eager's numbers) and ``as_strided``: those get their inputs back
in the strides they were traced with (``_restored``), as does a ``view`` that the new strides make
impossible (it cannot run on the fake tensors).

**Weights**: cuDNN's NHWC kernels read NHWC (KRSC) weights, and ATen's convolution copies an OIHW
weight of more than one tap to that order inside every call that reads NHWC activations. An
autocast weight cast is written channels-last by the cast itself (``_channels_last_weight``); a
weight that is a graph input read only by convolutions (an inference graph's parameter) is copied
by a kernel of ours, those of one shape in one launch before the first convolution of that shape
(``_channels_last_parameter``; ``weight_copies`` lists them, apart from ``layout_copies``).

**Outputs keep eager's strides**: an output whose strides changed gets a copy to its traced
strides in front of the output node. The exception are the values a forward graph saves for its
backward, when AOTAutograd can be told their strides (``TracingContext.output_strides``, which is
how Inductor reports its own layout choices; ``report_output_strides``): they stay channels-last,
AOTAutograd restrides the backward's example inputs accordingly, and ``adopt_input_strides``
gives the backward graph's placeholders those strides before any pass runs (this pass then
propagates them, whatever the backward's own decision).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import fx

from ait_dynamo.kernels import op_table
from ait_dynamo.kernels.op_table import OpClass
from ait_dynamo.partitioners import USER_OUTPUTS_META
from ait_dynamo.passes.graph_utils import has_static_layout, is_mutating, is_random, meta_value

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten

LAYOUT_MODES = ("auto", "on", "off")
# "auto" turns only 16-bit convolutions channels-last. In float32, cuDNN's NHWC kernels take TF32
# paths (torch.backends.cudnn.allow_tf32 is on by default) where the NCHW ones picked for the same
# small shapes compute in full float32: on the H200 the input gradient of a conv-BN-ReLU block
# moved 1.6e-4 relative from eager's (tests/test_batch_norm.py, torch 2.11, 2026-12-02), past
# eager's own distance to float64. The tensor-core win that channels-last exists for is a 16-bit one.
HALF_DTYPES = (torch.float16, torch.bfloat16)
NODES_PER_CONVOLUTION = 300
LAYOUT_META = "ait_layout"  # gm.meta: the LayoutDecision this pass took
TRACED_INPUTS_META = "ait_traced_inputs"  # gm.meta: placeholder → its meta before adopt_input_strides

# convolution op → the positions of its activation arguments (made channels-last)
_ACTIVATIONS = {aten.convolution.default: (0,), aten.convolution_backward.default: (0, 1)}
_WEIGHT = {aten.convolution.default: 1, aten.convolution_backward.default: 2}
# ops whose result depends on the strides of their input, not only on its values
_STRIDE_BOUND = {aten.as_strided.default, aten.as_strided_scatter.default}
_COPIES = {aten.clone.default, aten._to_copy.default, aten.copy.default, aten.contiguous.default}


@dataclass(frozen=True)
class LayoutDecision:
    channels_last: bool
    reason: str
    copies: tuple[str, ...] = ()  # the copies this pass inserted: "node: why"
    saved_in_new_layout: bool = False  # a forward's saved value left NHWC: AOTAutograd must hear of it


class LayoutError(Exception):
    """A value cannot be given the strides it needs by a copy (an overlapping or sparse layout)."""


def is_conv2d(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target not in _ACTIVATIONS:
        return False
    weight = meta_value(node.args[_WEIGHT[node.target]])
    return isinstance(weight, torch.Tensor) and weight.dim() == 4


def is_channels_last(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4 and value.is_contiguous(
        memory_format=torch.channels_last)


def same_layout(a: Any, b: Any) -> bool:
    """Same shape and the same strides along every dim of size > 1 (a size-1 dim's stride never
    moves an element); tuples elementwise; non-tensors always agree."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_layout(x, y) for x, y in zip(a, b))
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return True
    if tuple(a.shape) != tuple(b.shape) or a.layout != torch.strided or b.layout != torch.strided:
        return tuple(a.shape) == tuple(b.shape)
    if a.numel() == 0:
        return True
    return all(x == y for size, x, y in zip(a.shape, a.stride(), b.stride()) if size != 1)


def is_dense(value: torch.Tensor) -> bool:
    """Its elements fill their span of memory exactly once: some permutation of it is contiguous."""
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(value.shape, value.stride()) if s != 1),
                               key=lambda pair: pair[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def decide(gm: fx.GraphModule, config: Any) -> LayoutDecision:
    """Whether ``gm`` runs channels-last, and why (the rule is in the module doc)."""
    mode = getattr(config, "channels_last", "auto")
    if mode == "off":
        return LayoutDecision(False, "channels_last='off'")
    convolutions = [n for n in gm.graph.nodes if is_conv2d(n)]
    if not convolutions:
        return LayoutDecision(False, "no 2-D convolution")
    values = [meta_value(n) for n in gm.graph.nodes if n.op == "placeholder"]
    if any(isinstance(v, torch.Tensor) and not has_static_layout(v) for v in values):
        return LayoutDecision(False, "symbolic shapes")
    if mode == "on":
        return LayoutDecision(True, "channels_last='on'")
    weight = meta_value(convolutions[0].args[_WEIGHT[convolutions[0].target]])
    # Not on the CPU, though Inductor turns its mkldnn convolutions channels-last: on the 2-core AMD
    # EPYC (torch 2.14.1, fp32, batch 8 of 64x64, 2026-12-05) channels-last made ResNet-50's
    # inference 0.68x as fast in ait (0.76x in eager), MobileNetV3 and EfficientNet-B0 3-7% faster
    # and ConvNeXt-T no faster (benchmarks/results/cpu-epyc/channels_last/)
    if weight.device.type != "cuda":
        return LayoutDecision(False, f"on {weight.device.type}: channels-last pays where cuDNN's NHWC kernels run (CUDA)")
    wide = sorted({str(w.dtype) for w in (meta_value(n.args[_WEIGHT[n.target]]) for n in convolutions)
                   if w.dtype not in HALF_DTYPES})
    if wide:
        return LayoutDecision(False, f"convolutions in {', '.join(wide)}: cuDNN's NHWC kernels would round "
                                     "them to TF32 where eager's NCHW ones keep full precision")
    nodes = len(gm.graph.nodes)
    if len(convolutions) * NODES_PER_CONVOLUTION < nodes:
        return LayoutDecision(False, f"{len(convolutions)} convolutions in {nodes} nodes: "
                                     f"fewer than one per {NODES_PER_CONVOLUTION}")
    return LayoutDecision(True, f"conv-dominated: {len(convolutions)} convolutions in {nodes} nodes")


def _fake_mode(gm: fx.GraphModule) -> Any:
    from torch._guards import detect_fake_mode

    return detect_fake_mode([v for n in gm.graph.nodes for v in [meta_value(n)] if isinstance(v, torch.Tensor)])


@dataclass
class _Propagation:
    gm: fx.GraphModule
    fake_mode: Any
    traced: dict[fx.Node, Any]  # node → its meta value as AOTAutograd traced it (eager's strides)
    changed: set[fx.Node] = field(default_factory=set)  # nodes whose strides differ from the trace
    copies: list[str] = field(default_factory=list)
    restored: dict[fx.Node, fx.Node] = field(default_factory=dict)  # node → its copy in traced strides
    visited: set[fx.Node] = field(default_factory=set)  # nodes whose layout is settled, copies included

    @property
    def graph(self) -> fx.Graph:
        return self.gm.graph

    def _fake(self, target: Any, args: tuple, kwargs: dict) -> Any:
        args, kwargs = fx.node.map_arg((args, kwargs), lambda n: n.meta["val"])
        with self.fake_mode:
            return target(*args, **kwargs)

    def _call(self, target: Any, args: tuple, kwargs: dict | None = None) -> fx.Node:
        node = self.graph.call_function(target, args, kwargs or {})
        node.meta["val"] = self._fake(target, args, kwargs or {})
        self.visited.add(node)
        return node

    def _copy(self, source: fx.Node, before: fx.Node, like: torch.Tensor | None, why: str) -> fx.Node:
        """A copy of ``source`` laid out like ``like`` (``None``: channels-last), before ``before``."""
        with self.graph.inserting_before(before):
            if like is None:
                copy = self._call(aten.clone.default, (source,), {"memory_format": torch.channels_last})
            elif like.is_contiguous():
                copy = self._call(aten.clone.default, (source,), {"memory_format": torch.contiguous_format})
            elif is_dense(like):
                # dims from the outermost in memory to the innermost: permuted that way, the layout
                # is contiguous, so a contiguous clone of the permuted value permuted back has it
                order = sorted(range(like.dim()), key=lambda d: (-like.stride()[d], d))
                inverse = sorted(range(like.dim()), key=lambda d: order[d])
                permuted = self._call(aten.permute.default, (source, order))
                dense = self._call(aten.clone.default, (permuted,), {"memory_format": torch.contiguous_format})
                copy = self._call(aten.permute.default, (dense, inverse))
            else:
                raise LayoutError(f"{source.name} has to be copied to the strides {like.stride()}, "
                                  "which no dense copy has")
        if like is not None and not same_layout(copy.meta["val"], like):
            raise LayoutError(f"copying {source.name} gave strides {copy.meta['val'].stride()}, not {like.stride()}")
        self.copies.append(f"{copy.name}: {why}")
        return copy

    def _restored(self, node: fx.Node, before: fx.Node, why: str) -> fx.Node:
        """``node`` in its traced strides (one copy, shared by every reader that needs it)."""
        if node not in self.restored:
            self.restored[node] = self._copy(node, before, self.traced[node], why)
        return self.restored[node]

    def _restore_inputs(self, node: fx.Node, why: str) -> None:
        for used in list(node.all_input_nodes):
            if used in self.changed:
                node.replace_input_with(used, self._restored(used, node, f"{why} ({node.name})"))

    def _set(self, node: fx.Node, value: Any) -> None:
        if not same_layout(self.traced[node], value):
            self.changed.add(node)
        node.meta["val"] = value

    def _update(self, node: fx.Node) -> None:
        """Recompute the meta value of ``node``, one of whose inputs changed layout."""
        if node.target is operator.getitem:
            self._set(node, node.args[0].meta["val"][node.args[1]])
            return
        if not isinstance(node.target, torch._ops.OpOverload) or node.target in _STRIDE_BOUND or is_random(node):
            self._restore_inputs(node, f"{node.target} reads its input's strides")
            return
        if is_mutating(node):
            return  # it writes into an input of its own layout, whatever the layout of the values
        try:
            value = self._fake(node.target, node.args, node.kwargs)
        except Exception as error:  # noqa: BLE001 - e.g. a view the new strides make impossible
            log.debug("layout: %s runs on its traced strides (%s)", node.name, error)
            self._restore_inputs(node, f"{node.target} cannot run on the new strides")
            return
        self._set(node, value)

    def _channels_last_copy(self, value: fx.Node, node: fx.Node, why: str) -> None:
        """A channels-last copy of ``value`` before ``node``, read by ``node`` and by every later
        reader of ``value``: a residual add after the block then reads NHWC as well, instead of
        making the next block's input NCHW again."""
        copy = self._copy(value, node, None, why)
        self.traced[copy] = self.traced[value]
        self.changed.add(copy)
        if value not in self.changed:
            self.restored[copy] = value  # where the traced strides are needed, the original serves
        for user in list(value.users):
            if user is not copy and user.op != "output" and user not in self.visited:
                user.replace_input_with(value, copy)

    def _mixed_layouts(self, node: fx.Node) -> list[fx.Node]:
        """The NCHW 4-d inputs of an ATen call that also reads NHWC ones, where the call is not
        pointwise or a reduction (whose meta functions share ATen's stride rule): ATen and the meta
        functions may disagree on its result's layout (``native_batch_norm_backward`` on the CPU
        follows its input, its meta function the output gradient)."""
        if not isinstance(node.target, torch._ops.OpOverload) or is_mutating(node) or is_random(node):
            return []
        if node.target in _ACTIVATIONS:  # NHWC activations with an OIHW weight: NHWC, both agree (checked)
            return []
        if op_table.op_class(node.target) in (OpClass.POINTWISE, OpClass.REDUCTION, OpClass.VIEW):
            return []
        inputs = [n for n in node.all_input_nodes if isinstance(meta_value(n), torch.Tensor) and meta_value(n).dim() == 4]
        # a value that is both (one channel, or 1x1 pixels) suits either rule
        channels_last = [n for n in inputs if is_channels_last(meta_value(n))]
        if not any(not meta_value(n).is_contiguous() for n in channels_last):
            return []
        return [n for n in inputs if n not in channels_last]

    def _early_inputs(self) -> list[fx.Node]:
        """4-d NCHW placeholders made channels-last where first read rather than where a
        convolution reads them: a backward's output gradients (AOTAutograd names them
        ``tangents_*``), which start its residual stream (ConvNeXt's backward would transpose
        them for the linear layers of every block), and the placeholders a convolution reads as
        its activation, which other ops may read first (a residual add that the partitioner
        recomputes in the backward). Other 4-d placeholders may be NHWC-shaped already."""
        activations = {n.args[p] for n in self.graph.nodes if is_conv2d(n) for p in _ACTIVATIONS[n.target]}
        return [n for n in self.graph.nodes if n.op == "placeholder"
                and (n.name.startswith("tangents") or n in activations)
                and isinstance(meta_value(n), torch.Tensor) and meta_value(n).dim() == 4
                and not is_channels_last(meta_value(n)) and n.users]

    def _channels_last_weight(self, node: fx.Node, saved_from: int | None) -> None:
        """The weight of convolution ``node``, where the graph casts it (autocast's 16-bit copy of
        a float32 parameter), written channels-last by that cast at no extra cost. Left OIHW,
        cuDNN copies a weight of more than one tap to NHWC order on every call that reads NHWC
        activations, forward and backward: 33 copies, 0.13 ms of ResNet-50's bf16 training step
        on the H200 (benchmarks/results/nvidia-h200/bn_relu_fold/). Only where every reader is a
        convolution's weight, or the forward's saved values (``saved_from`` on), which the
        backward receives in this layout."""
        weight = node.args[_WEIGHT[node.target]]
        if not (isinstance(weight, fx.Node) and weight.op == "call_function" and weight.target is aten._to_copy.default):
            return
        value = meta_value(weight)
        if (not isinstance(value, torch.Tensor) or value.dim() != 4 or is_channels_last(value)
                or weight.kwargs.get("memory_format", torch.preserve_format) is not torch.preserve_format
                or weight in self.changed or not has_static_layout(value)):
            return
        output = self.graph.output_node()
        returned = list(output.args[0]) if isinstance(output.args[0], (list, tuple)) else [output.args[0]]
        for user in weight.users:
            if user.op == "output":
                if saved_from is None or any(v is weight for v in returned[:saved_from]):
                    return
            elif not (is_conv2d(user) and user.args[_WEIGHT[user.target]] is weight
                      and all(user.args[p] is not weight for p in _ACTIVATIONS[user.target])):
                return
        weight.kwargs = {**weight.kwargs, "memory_format": torch.channels_last}
        self._set(weight, self._fake(weight.target, weight.args, weight.kwargs))

    def _parameter_weights(self) -> dict[fx.Node, fx.Node]:
        """Convolution weights that are graph inputs read by nothing but forward convolutions'
        weight arguments (an inference graph's parameters), in OIHW order: weight → where its
        channels-last copy goes, before the first convolution that reads a weight of its shape."""
        found: dict[fx.Node, tuple[Any, ...]] = {}
        for node in self.graph.nodes:
            if node.op != "placeholder" or not node.users or node in self.changed:
                continue
            value = meta_value(node)
            if (not isinstance(value, torch.Tensor) or value.dim() != 4 or is_channels_last(value)
                    or not has_static_layout(value)):
                continue
            if read_only_as_weight(node, (aten.convolution.default,)):
                found[node] = (tuple(value.shape), value.dtype)
        first: dict[tuple[Any, ...], fx.Node] = {}
        for node in self.graph.nodes:
            if node.op == "call_function" and node.target is aten.convolution.default and node.args[1] in found:
                first.setdefault(found[node.args[1]], node)
        return {weight: first[shape] for weight, shape in found.items()}

    def _channels_last_parameter(self, weight: fx.Node, before: fx.Node) -> None:
        """A channels-last copy of convolution weight ``weight`` (``_parameter_weights``) by a
        kernel of ours, before ``before``, where the copies of the other weights of its shape go:
        the planner's horizontal fusion copies them in one launch (ResNet-50: 17 weights in 5
        kernels), and they are alive from the first convolution of their shape only. Left OIHW,
        ATen's convolution allocates and copies the weight to NHWC order inside every call that
        reads NHWC activations: 17 copies a ResNet-50 inference step, 72.6 us of kernels, and
        12.5 to 22 us more host time a call than with an NHWC weight (H100, torch 2.11,
        benchmarks/results/nvidia-h100/session_1205b/: conv_host.py and the profiles). Inductor
        passes such weights NHWC too. 1x1 and depthwise weights are both layouts at once."""
        with self.graph.inserting_before(before):
            copy = self._call(aten.clone.default, (weight,), {"memory_format": torch.channels_last})
        for user in list(weight.users):
            if user is not copy:
                user.replace_input_with(weight, copy)
        self.traced[copy] = meta_value(weight)
        self.changed.add(copy)
        self.copies.append(f"{copy.name}: channels-last weight {weight.name}")

    def run(self, convert: bool, saved_from: int | None = None) -> None:
        pending = set(self._early_inputs()) if convert else set()
        parameters = self._parameter_weights() if convert else {}
        for node in list(self.graph.nodes):
            if node.op != "call_function":
                continue
            for value in [n for n in node.all_input_nodes if n in pending]:
                pending.discard(value)
                self._channels_last_copy(value, node, f"channels-last {value.name} where first read")
            if convert and is_conv2d(node):
                for position in _ACTIVATIONS[node.target]:
                    activation = node.args[position]
                    if isinstance(activation, fx.Node) and not is_channels_last(meta_value(activation)):
                        self._channels_last_copy(activation, node, f"channels-last input of {node.name}")
                self._channels_last_weight(node, saved_from)
                weight = node.args[_WEIGHT[node.target]]
                if weight in parameters:
                    self._channels_last_parameter(weight, parameters.pop(weight))
            if any(used in self.changed for used in node.all_input_nodes):
                for value in self._mixed_layouts(node):
                    self._channels_last_copy(value, node, f"one layout for {node.name}")
                self._update(node)
            self.visited.add(node)

    def restore_outputs(self, keep_from: int | None) -> bool:
        """Outputs before ``keep_from`` (all when ``None``) get their traced strides back; True
        when a later one keeps a new layout."""
        kept = False
        output = self.graph.output_node()
        values = list(output.args[0]) if isinstance(output.args[0], (list, tuple)) else [output.args[0]]
        for index, value in enumerate(values):
            if not isinstance(value, fx.Node) or value.op == "placeholder" or value not in self.changed:
                continue
            if keep_from is not None and index >= keep_from:
                kept = kept or not same_layout(self.traced[value], value.meta["val"])
                continue
            values[index] = self._restored(value, output, f"output {index} in eager's strides")
        output.args = (type(output.args[0])(values) if isinstance(output.args[0], (list, tuple)) else values[0],)
        return kept


def can_report_output_strides() -> bool:
    """True while AOTAutograd collects a forward graph's output strides (it then restrides the
    backward's example inputs to them)."""
    context = torch._guards.TracingContext.try_get()
    return context is not None and context.output_strides is not None


def report_output_strides(gm: fx.GraphModule) -> None:
    """Tell AOTAutograd the strides of the compiled graph's outputs (as Inductor does), where this
    pass left saved values in a new layout. Only there: AOTAutograd maps the reported strides to
    the backward's placeholders by its own count of the outputs, which our partition of some graphs
    does not match (linalg.solve's forward: an IndexError restriding its backward inputs)."""
    decision = gm.meta.get(LAYOUT_META)
    if decision is None or not decision.saved_in_new_layout or not can_report_output_strides():
        return
    context = torch._guards.TracingContext.try_get()
    output = gm.graph.output_node().args[0]
    for value in output if isinstance(output, (list, tuple)) else [output]:
        meta = meta_value(value)
        static = has_static_layout(meta)
        context.output_strides.append(tuple(int(s) for s in meta.stride()) if static else None)


def adopt_input_strides(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Placeholders take the strides of the example inputs where those differ: a backward graph's
    saved values arrive in the layout the forward chose. The traced metas are kept for this pass."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    traced: dict[fx.Node, Any] = {}
    for node, example in zip(placeholders, example_inputs):
        meta = meta_value(node)
        if not (has_static_layout(meta) and has_static_layout(example)) or tuple(meta.shape) != tuple(example.shape):
            continue
        if same_layout(meta, example):
            continue
        fake_mode = getattr(meta, "fake_mode", None)
        if fake_mode is None:
            continue
        with fake_mode:
            node.meta["val"] = torch.empty_strided(tuple(meta.shape), tuple(example.stride()), dtype=meta.dtype,
                                                   device=meta.device)
        traced[node] = meta
    if traced:
        gm.meta[TRACED_INPUTS_META] = traced


def channels_last_layout(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """Run conv-dominated graphs channels-last (see the module doc)."""
    decision = decide(gm, config)
    traced_inputs: dict[fx.Node, Any] = gm.meta.get(TRACED_INPUTS_META, {})
    if not decision.channels_last and not traced_inputs:
        gm.meta[LAYOUT_META] = decision
        log.debug("layout: contiguous (%s)", decision.reason)
        return gm
    fake_mode = _fake_mode(gm)
    if fake_mode is None:
        gm.meta[LAYOUT_META] = LayoutDecision(False, "no fake tensors to propagate strides on")
        return gm
    traced = {n: meta_value(n) for n in gm.graph.nodes} | traced_inputs
    propagation = _Propagation(gm, fake_mode, traced, changed=set(traced_inputs))
    user_outputs = gm.meta.get(USER_OUTPUTS_META)
    # saved values keep their layout only where the backward will hear of it
    saved_from = user_outputs if user_outputs is not None and can_report_output_strides() else None
    propagation.run(convert=decision.channels_last, saved_from=saved_from)
    kept = propagation.restore_outputs(saved_from)
    gm.graph.lint()
    gm.recompile()
    gm.meta[LAYOUT_META] = LayoutDecision(decision.channels_last, decision.reason, tuple(propagation.copies), kept)
    log.info("layout: %s (%s), %d copies", "channels-last" if decision.channels_last else "contiguous",
             decision.reason, len(propagation.copies))
    return gm


def read_only_as_weight(node: fx.Node, targets: Sequence[Any] = tuple(_ACTIVATIONS)) -> bool:
    """Every reader of ``node`` is a 2-D convolution among ``targets`` that reads it as its weight
    and as nothing else."""
    return bool(node.users) and all(
        is_conv2d(user) and user.target in targets and user.args[_WEIGHT[user.target]] is node
        and all(user.args[p] is not node for p in _ACTIVATIONS[user.target]) for user in node.users)


def is_weight_copy(node: fx.Node) -> bool:
    """A copy of a graph input read only as convolutions' weight (``_channels_last_parameter``):
    the weight layout change ATen's convolution would make anyway, not a transpose of a value."""
    return (node.op == "call_function" and node.target in _COPIES and isinstance(node.args[0], fx.Node)
            and node.args[0].op == "placeholder" and read_only_as_weight(node))


def weight_copies(gm: fx.GraphModule) -> list[str]:
    """The copies in ``gm`` that change a graph input's memory order for the convolutions that read
    it as their weight (``_channels_last_parameter``): ``"name: input strides -> output strides"``."""
    return [f"{n.name}: {tuple(meta_value(n.args[0]).stride())} -> {tuple(meta_value(n).stride())}"
            for n in gm.graph.nodes if is_weight_copy(n) and not same_layout(meta_value(n.args[0]), meta_value(n))]


def layout_copies(gm: fx.GraphModule) -> list[str]:
    """Copies in ``gm`` that change a 4-d value's memory order (the transposes this pass exists to
    avoid), the parameters' weight copies aside (``weight_copies``):
    ``"name: input strides -> output strides"``."""
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _COPIES or not isinstance(node.args[0], fx.Node):
            continue
        if is_weight_copy(node):
            continue
        source, result = meta_value(node.args[0]), meta_value(node)
        if isinstance(source, torch.Tensor) and isinstance(result, torch.Tensor) and source.dtype != result.dtype:
            continue  # a cast that runs anyway: writing it in another order costs nothing more
        if isinstance(result, torch.Tensor) and result.dim() == 4 and not same_layout(source, result):
            found.append(f"{node.name}: {tuple(source.stride())} -> {tuple(result.stride())}")
    return found


def channels_last_convolutions(gm: fx.GraphModule) -> tuple[int, int]:
    """(2-D convolutions in ``gm``, how many of them read channels-last activations)."""
    convolutions = [n for n in gm.graph.nodes if is_conv2d(n)]
    channels_last = [n for n in convolutions
                     if all(is_channels_last(meta_value(n.args[p])) for p in _ACTIVATIONS[n.target])]
    return len(convolutions), len(channels_last)
