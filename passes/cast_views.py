"""Casts change sides with views, towards the value they cast, so that a view does not stand
between a cast and the kernel that computes or reads its operand.

A generated kernel runs over one iteration space; a reshape of a computed value between two ops
(``[8, 128, V] -> [1024, V]``) keeps them apart. Hugging Face's causal-LM loss casts the logits to
float32 and flattens them: ``view(to(logits, f32), [-1, V])``, then log_softmax over rows. The
cast ran as a kernel of its own over GPT-2's 8x128x50257 logits (98 MB read, 196 MB written) and
the row kernel read its 196 MB result; the backward had the same cast back to bfloat16 after a
view. Rewritten:

- ``view(cast(x))`` with ``x`` a graph input (or constant) -> ``cast(view(x))``: the cast joins
  the kernel that reads the view (the view of an input is read in place);
- ``cast(view(y))`` with ``y`` computed by a kernel's op -> ``view(cast(y))``: the cast joins the
  kernel that computes ``y``, and the view of its result is free;
- ``view(cast(y))`` with ``y`` computed by an op no kernel computes (a GEMM, a convolution, an
  ATen call) -> ``cast(view(y))``: the cast joins the kernel that reads the view (a view of an
  ATen result is read in place, and a GEMM group takes a view of its product). GPT-2's training
  backward casts bfloat16 activation-gradient GEMM products ([1024, 3072]) to float32 and reads
  them as [8, 128, 3072]: each cast was a kernel of its own, writing and reading back 12 MB.

Only where the moved intermediate has no other user and the result has exactly the layout it had
(dtype casts keep the strides of a dense tensor).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels import op_table
from ait_dynamo.passes.graph_utils import RESHAPES, fake_result, meta_value, same_tensor_layout

aten = torch.ops.aten
prims = torch.ops.prims



def _is_cast(node: fx.Node) -> bool:
    """A dtype conversion on the same device (strided, no memory format asked for)."""
    if node.op != "call_function":
        return False
    if node.target is prims.convert_element_type.default:
        return True
    if node.target is not aten._to_copy.default or len(node.args) != 1:
        return False
    value, source = meta_value(node), meta_value(node.args[0])
    return (not set(node.kwargs) - {"dtype", "layout", "device"}
            and node.kwargs.get("layout", torch.strided) == torch.strided
            and isinstance(value, torch.Tensor) and isinstance(source, torch.Tensor) and value.device == source.device)


def _not_generated(node: fx.Node) -> bool:
    """An op whose result no generated kernel computes: the planner leaves it to ATen (or to a
    GEMM group, which takes views of its product)."""
    return (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and op_table.op_class(node.target) in (op_table.OpClass.COMPUTE_INTENSIVE, op_table.OpClass.OTHER))


def _is_view(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target in RESHAPES


def _swap(graph: fx.Graph, outer: fx.Node, inner: fx.Node, source: fx.Node) -> bool:
    """``outer(inner(source))`` -> ``inner'(outer'(source))``, where the primed ops take the other's
    place; True where the result keeps ``outer``'s layout."""
    first_args = (source,) + tuple(outer.args[1:])
    try:  # a view of the source's strides may not exist (an expanded input the cast made dense)
        first_meta = fake_result(outer.target, first_args, outer.kwargs)
    except (RuntimeError, ValueError):
        return False
    if not isinstance(first_meta, torch.Tensor):
        return False
    with graph.inserting_before(outer):
        first = graph.call_function(outer.target, first_args, dict(outer.kwargs))
        first.meta = {**outer.meta, "val": first_meta}
        second_args = (first,) + tuple(inner.args[1:])
        try:
            second_meta = fake_result(inner.target, second_args, inner.kwargs)
        except (RuntimeError, ValueError):
            second_meta = None
        if not same_tensor_layout(second_meta, meta_value(outer)):
            graph.erase_node(first)
            return False
        second = graph.call_function(inner.target, second_args, dict(inner.kwargs))
        second.meta = {**inner.meta, "val": second_meta}
    outer.replace_all_uses_with(second)
    graph.erase_node(outer)
    graph.erase_node(inner)
    return True


def move_casts_to_producers(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    graph = gm.graph
    changed = False
    for node in list(graph.nodes):
        if node.graph is not graph or node.op != "call_function" or len(node.users) == 0:
            continue
        inner = node.args[0] if node.args else None
        if not isinstance(inner, fx.Node) or len(inner.users) != 1 or not inner.args:
            continue
        source = inner.args[0]
        if not isinstance(source, fx.Node):
            continue
        if _is_view(node) and _is_cast(inner) and (source.op in ("placeholder", "get_attr") or _not_generated(source)):
            changed |= _swap(graph, node, inner, source)
        elif (_is_cast(node) and _is_view(inner) and source.op == "call_function" and not _is_view(source)
              and not _not_generated(source)):
            changed |= _swap(graph, node, inner, source)
    if changed:
        graph.lint()
        gm.recompile()
    return gm
