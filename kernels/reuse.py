"""In-place buffer reuse: a kernel output written into the buffer of an input that dies at that
kernel, instead of a fresh allocation.

This lowers peak memory where a large temporary is consumed elementwise just before its last use:
in the encoder block's backward, ReLU's gradient (``where(relu > 0, grad, 0)``, 36.8 MiB at batch
32) was allocated while its 36.8 MiB input was still alive, at the step's memory peak.

Two levels decide it:
  * the kernel (:func:`inplace_candidates`): the output is written at exactly the offsets the input
    is read at, every read of that input is emitted before the kernel's first store, and the
    stored value depends on the read one, so each element is read before it is overwritten, by the
    same program; and that program is the element's only writer (the kernel records no offset for
    an output stored once per broadcast row, or by every split of a split kernel);
  * the plan (:func:`choose_reuse`): the input is a fresh buffer this graph made (a kernel's output
    or a non-aliasing ATen result, not a graph input or a view), no view of it exists, this step is
    its last use, and it has the output's shape, strides and dtype, its elements dense from offset 0
    in any dim order (channels-last too); read through a view of it, view and buffer contiguous.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import has_static_layout, may_alias_input, same_tensor_layout
from ait_dynamo.passes.layout import is_dense
from ait_dynamo.passes.plan import ExternCall, FusionGroup, Plan


def _depends_on(group: FusionGroup, output: fx.Node, source: fx.Node) -> bool:
    members = set(group.nodes)
    stack, seen = [output], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for used in node.all_input_nodes:
            if used is source:
                return True
            if used in members:
                stack.append(used)
    return False


def inplace_candidates(group: FusionGroup, load_log: list[tuple[fx.Node, str, int]],
                       store_offsets: dict[int, str | None], out_buffers: list[tuple[fx.Node, str]]) -> dict[str, list[fx.Node]]:
    def buffer_of(node: fx.Node) -> fx.Node:
        return group.input_views[node][0] if node in group.input_views else node

    # every read of a buffer counts, whichever view of it the kernel reads through: a buffer read
    # both directly and through a transposed view must not be overwritten element by element
    reads_of_buffer: dict[fx.Node, list[tuple[str, int]]] = {}
    loaded: list[fx.Node] = []
    for node, offset, stores_before in load_log:
        reads_of_buffer.setdefault(buffer_of(node), []).append((offset, stores_before))
        if node not in loaded:
            loaded.append(node)
    result: dict[str, list[fx.Node]] = {}
    for index, (output, buffer) in enumerate(out_buffers):
        offset = store_offsets.get(index)
        if offset is None:
            continue
        result[buffer] = [
            node for node in loaded
            if (node not in group.input_views or group.input_views[node][1] == 0)
            and all(read == offset and before == 0 for read, before in reads_of_buffer[buffer_of(node)])
            and _depends_on(group, output, node)
        ]
    return result


def _returns_fresh_tensor(node: fx.Node) -> bool:
    """True for a call whose one result never aliases an input (mm, convolution, ...)."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload) or target._schema.is_mutable or len(target._schema.returns) != 1:
        return False
    return not may_alias_input(node)


def _dense_from_start(t: torch.Tensor) -> bool:
    return t.numel() > 0 and t.is_contiguous() and t.storage_offset() == 0


def _dense_in_any_order(t: torch.Tensor) -> bool:
    """Its elements fill its storage from offset 0, each once, in some dim order: a channels-last
    activation as well as a contiguous one. An output with the same shape and strides then writes
    exactly the elements the kernel reads, each at its own offset. (Contiguous only, channels-last
    convolution outputs were never taken over in place: in ResNet-50's inference wrapper each
    bottleneck's BN + add + ReLU kernel allocated a third 256-channel buffer beside the two dying
    ones it reads.)"""
    return t.numel() > 0 and t.storage_offset() == 0 and is_dense(t)


def _same_layout(a: Any, b: Any) -> bool:
    return has_static_layout(a) and has_static_layout(b) and same_tensor_layout(a, b) and _dense_in_any_order(a)


def _same_elements(base: Any, output: Any) -> bool:
    """Contiguous, same dtype and element count: element i of one is element i of the other."""
    return (has_static_layout(base) and has_static_layout(output) and base.dtype == output.dtype and base.device == output.device
            and base.numel() == output.numel() and _dense_from_start(base))


def owned_buffers(plan: Plan) -> set[fx.Node]:
    """Values whose buffer the graph allocated itself and does not return: kernel outputs and
    fresh ATen results (a returned value must stay as AOTAutograd traced it)."""
    made_by_kernel = {n for step in plan.steps if isinstance(step, FusionGroup) for n in step.outputs}
    made_by_aten = {step.node for step in plan.steps if isinstance(step, ExternCall) and _returns_fresh_tensor(step.node)}
    return (made_by_kernel | made_by_aten) - set(plan.output.all_input_nodes)


def choose_reuse(plan: Plan, index: int, group: FusionGroup, candidates: dict[str, list[fx.Node]],
                 out_buffers: list[tuple[fx.Node, str]], owned: set[fx.Node]) -> dict[str, fx.Node]:
    """Output buffer name → the input whose buffer it takes, for the step at ``index``;
    ``owned`` is :func:`owned_buffers` of the plan."""
    dying = set(plan.frees_after.get(index, []))
    chosen: dict[str, fx.Node] = {}
    taken: set[fx.Node] = set()
    members = set(group.nodes)
    for output, buffer in out_buffers:
        for loaded in candidates.get(buffer, []):
            # a view read in place (offset 0) stands for its base buffer
            node = group.input_views[loaded][0] if loaded in group.input_views else loaded
            if node in taken or node not in dying or node not in owned:
                continue
            if any(not _folded_here(user, group, members) for user in node.users
                   if user.target is operator.getitem or may_alias_input(user)):
                continue
            if not _same_layout(loaded.meta.get("val"), output.meta.get("val")):
                continue
            # through a view, the output takes the base's tensor, strides and all: both contiguous
            # (a transposed view of a contiguous base, read and written at one offset, would leave
            # the output with the base's strides: pinverse's gradient came out transposed)
            if loaded is not node and not (_dense_from_start(loaded.meta.get("val"))
                                           and _same_elements(node.meta.get("val"), output.meta.get("val"))):
                continue
            chosen[buffer] = node
            taken.add(node)
            break
    return chosen


def _folded_here(view: fx.Node, group: FusionGroup, members: set[fx.Node]) -> bool:
    """A view of the buffer that only this kernel reads (through its strides): it dies here too."""
    return view in group.input_views and all(user in members for user in view.users)
