"""0-d CPU tensors read by device kernels: passed by value, not by pointer.

Under ``dynamic=True`` Dynamo passes a module's float attributes (an RMSNorm's ``eps``, a scale) as
0-d float64 CPU tensors, and ATen lets a CUDA op take such a "CPU scalar" as an operand. A CUDA
kernel cannot dereference a CPU pointer, so before this the planner refused every CUDA op that
read one ("moves data between devices"): the RMSNorm of ``tests/test_dynamic_shapes.py`` compiled
on CUDA to two kernels, two CPU casts and two ATen calls (``add``, ``mul``) where the CPU compiles
one kernel. A kernel now takes such a tensor's value as an argument (``t.item()``, read by the
wrapper at the launch, on the host: no device synchronisation), and the CPU ops on it (its cast
to float32) run inside the kernel that reads them.

Exactness: Triton passes a Python float as a float32 argument. That is the value ATen computes
with when the scalar is float32, float16 or bfloat16 (exactly representable), or a float64 one
cast to float32 (the cast the graph asks for: IEEE round to nearest either way). A float64 scalar
read any other way (a float64 computation, a cast to a half type, which rounds differently from
float64 than through float32) keeps its pointer and the old refusal.
"""

from __future__ import annotations

import torch
from torch import fx

from ait_dynamo.passes.graph_utils import meta_value

_prims = torch.ops.prims
_EXACT_IN_FLOAT32 = (torch.float32, torch.float16, torch.bfloat16)


def _cpu_scalar(node: fx.Node) -> torch.Tensor | None:
    value = meta_value(node)
    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dim() == 0 \
            and value.dtype.is_floating_point:
        return value
    return None


def _cast_to_float32(node: fx.Node) -> bool:
    if node.target is _prims.convert_element_type.default:
        return node.args[1] == torch.float32
    # before AOTAutograd's decompositions: ``t.to(torch.float32)``, on the same device
    return node.target is torch.ops.aten._to_copy.default and node.kwargs.get("dtype") == torch.float32 \
        and set(node.kwargs) <= {"dtype", "memory_format"}


def is_host_scalar_input(node: fx.Node) -> bool:
    """A graph input a kernel reads by value: a 0-d floating CPU tensor whose float32 value is
    what every reader computes with (see the module doc). The graph's output reads nothing: a
    forward returns the input itself when it saves it for the backward (which recomputes the
    cast: partitioners/cost_model.py), and that return must not cost the by-value read."""
    value = _cpu_scalar(node) if node.op == "placeholder" else None
    if value is None:
        return False
    readers = [user for user in node.users if user.op != "output"]
    return value.dtype in _EXACT_IN_FLOAT32 or (
        value.dtype == torch.float64 and bool(readers) and all(_cast_to_float32(user) for user in readers))


def is_host_scalar_value(node: fx.Node) -> bool:
    """A host-scalar input, or a 0-d CPU result computed from host-scalar inputs alone, of a
    dtype exact in float32, that has one reader (the kernel of that reader computes it, so it is
    never a kernel's output; where it cannot, the kernel reads ATen's result by value)."""
    if is_host_scalar_input(node):
        return True
    value = _cpu_scalar(node) if node.op == "call_function" else None
    if value is None or value.dtype not in _EXACT_IN_FLOAT32 or len(node.users) != 1:
        return False
    operands = node.all_input_nodes
    return bool(operands) and all(is_host_scalar_value(operand) for operand in operands)


def computed_from_host_scalars(node: fx.Node, inputs: set[fx.Node] | None = None) -> bool:
    """A 0-d floating CPU result of ops on 0-d floating CPU values, from 0-d floating CPU graph
    inputs alone, whatever its dtype and readers: in a joint graph, a float attribute's casts
    (there ``f64 -> f64 -> f32``; the no-op cast goes later). ``inputs``, when given, collects
    the graph inputs it is computed from."""
    if node.op != "call_function" or _cpu_scalar(node) is None or not node.all_input_nodes:
        return False
    found: set[fx.Node] = set() if inputs is None else inputs
    stack = list(node.all_input_nodes)
    while stack:
        operand = stack.pop()
        if _cpu_scalar(operand) is None:
            return False
        if operand.op == "placeholder":
            found.add(operand)
        elif operand.op == "call_function" and operand.all_input_nodes:
            stack.extend(operand.all_input_nodes)
        else:
            return False  # a constant, a value made from nothing (a random draw)
    return True


__all__ = ["computed_from_host_scalars", "is_host_scalar_input", "is_host_scalar_value"]
