"""Which GEMMs take the Triton template (``templates/gemm.py.jinja``) and which stay ATen externs.

Two questions, asked by the fusion planner for every ``mm`` / ``addmm`` / ``bmm`` (the second
also for depthwise convolutions, whose template ``kernels/depthwise.py`` describes):

1. Can the template compute it? (:func:`template_refusal`) Operands and result of one floating
   dtype (fp16, bf16, fp32) on one device, static sizes and strides, ``addmm``'s bias broadcast
   to the result and numeric ``beta`` / ``alpha``. Anything else stays ATen, with the reason in
   the fusion report.
2. Should it? (:func:`backend_choice`) The rule, with option ``gemm_backends``:

   * without ``"triton"``: ATen (cuBLAS), its epilogue a separate fused kernel, as before;
   * without ``"aten"``: the template, wherever Triton runs on the GEMM's device (CUDA, or the CPU
     under ``TRITON_INTERPRET=1``: that is how the CPU tests exercise it);
   * with both (the default): a measurement decides (``kernels/gemm_tuning.py``, CUDA with
     ``autotune=True``, kept on disk). Where there is no measurement (autotune off, another
     device, tuning budget spent), ATen: cuBLAS is the known quantity, and behaviour on the GPU
     does not change until the template has been measured there. One exception, measured:
     depthwise convolutions of 7x7 taps or more on CUDA take the template
     (``kernels/depthwise.default_on_cuda``).
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping

import torch
from torch import fx

from ait_dynamo.kernels.runtime import triton_runs_on
from ait_dynamo.passes.fusion_maps import Refused, broadcast_map
from ait_dynamo.passes.graph_utils import RESHAPES, meta_value

aten = torch.ops.aten

GEMMS = (aten.mm.default, aten.addmm.default, aten.bmm.default)
TEMPLATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRANSPOSES = (aten.t.default, aten.transpose.int, aten.permute.default)


# What starts a template group: a GEMM, or a depthwise convolution (kernels/depthwise.py)
TEMPLATE_OPS = GEMMS + (aten.convolution.default,)


def operands(node: fx.Node) -> tuple[Any, fx.Node, fx.Node]:
    """(bias or None, A, B) of a GEMM node; (bias or None, input, weight) of a convolution."""
    if node.target is aten.addmm.default:
        return node.args[0], node.args[1], node.args[2]
    if node.target is aten.convolution.default:
        return node.args[2], node.args[0], node.args[1]
    return None, node.args[0], node.args[1]


def gemm_node(group: Any) -> fx.Node:
    """The mm / addmm / bmm of a GEMM fusion group (its prologue ops come before it), or the
    convolution of a depthwise one."""
    return next(n for n in group.nodes if n.target in TEMPLATE_OPS)


def scalars(node: fx.Node) -> tuple[Any, Any]:
    """(beta, alpha) of an addmm; (0, 1) for mm / bmm."""
    if node.target is aten.addmm.default:
        return node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    return 0, 1


def _static(value: torch.Tensor) -> bool:
    return all(isinstance(v, int) for v in (*value.shape, *value.stride(), value.storage_offset()))


def template_refusal(node: fx.Node) -> str | None:
    """Why the template cannot compute this GEMM, or ``None`` when it can."""
    if node.target not in GEMMS:
        return f"{node.target} is not mm / addmm / bmm"
    if node.kwargs.get("out_dtype") is not None:
        return "GEMM with out_dtype"
    out = meta_value(node)
    bias, a, b = operands(node)
    if not all(isinstance(x, fx.Node) for x in (a, b)) or (bias is not None and not isinstance(bias, fx.Node)):
        return "GEMM operand is not a tensor node"
    values = [meta_value(x) for x in (a, b, bias) if x is not None]
    if not isinstance(out, torch.Tensor) or not all(isinstance(v, torch.Tensor) for v in values):
        return "GEMM operand without a traced tensor value"
    if out.dtype not in TEMPLATE_DTYPES or any(v.dtype != out.dtype for v in values):
        return f"GEMM in {out.dtype} (the template takes one of fp16, bf16, fp32 for all operands)"
    if any(v.device != out.device for v in values) or any(v.layout != torch.strided for v in [out, *values]):
        return "GEMM operands on several devices or not strided"
    if not all(_static(v) for v in [out, *values]):
        return "GEMM with symbolic sizes or strides (the template specialises on them)"
    beta, alpha = scalars(node)
    if not all(isinstance(s, numbers.Number) and not isinstance(s, complex) for s in (beta, alpha)):
        return "addmm with a non-numeric beta / alpha"
    if bias is not None:
        try:
            broadcast_map(tuple(meta_value(bias).shape), tuple(out.shape), tuple(range(out.dim())))
        except Refused:
            return "addmm bias does not broadcast to the result"
    return None


def backend_choice(node: fx.Node, backends: tuple[str, ...], measured: Mapping[str, bool]) -> tuple[bool, str]:
    """(take the template, why) for a GEMM the template can compute; see the module doc."""
    device = meta_value(node).device.type
    if "triton" not in backends:
        return False, "gemm_backends has no 'triton'"
    if not triton_runs_on(device):
        return False, f"Triton does not run on {device} here"
    if "aten" not in backends:
        return True, "gemm_backends=('triton',)"
    library = "cuDNN" if node.target is aten.convolution.default else "cuBLAS"
    if node.name in measured:
        return measured[node.name], "measured: " + ("template faster" if measured[node.name] else f"{library} faster")
    if node.target is aten.convolution.default:
        from ait_dynamo.kernels import depthwise

        if depthwise.default_on_cuda(node):
            return True, "no measurement: a 7x7 (or larger) depthwise kernel, where the template beat cuDNN"
    return False, f"no measurement (autotune off, not CUDA, or budget spent): {library}"




def splits_rows(gemm: fx.Node, view: fx.Node) -> bool:
    """Whether ``view`` reshapes a 2-D GEMM's [M, N] product into [d0, ..., dk, N] with
    d0 * ... * dk = M: ``nn.Linear`` on a [batch, tokens, features] input. The template's tile
    rows then run over the flattened leading dims (their indices by div/mod of the row), and
    the epilogue's iteration space is the view's. A full-size addmm bias ([M, N]) would need the
    rows unflattened: refused."""
    if gemm.target not in (aten.mm.default, aten.addmm.default) or view.target not in RESHAPES:
        return False
    product, reshaped = meta_value(gemm), meta_value(view)
    if not isinstance(product, torch.Tensor) or not isinstance(reshaped, torch.Tensor) or reshaped.dim() < 2:
        return False
    m, n = product.shape
    if not product.is_contiguous() or reshaped.shape[-1] != n:
        return False
    rows = 1
    for size in reshaped.shape[:-1]:
        if not isinstance(size, int):
            return False
        rows *= size
    bias = operands(gemm)[0]
    if bias is not None and meta_value(bias).dim() == 2 and meta_value(bias).shape[0] != 1:
        return False
    return rows == m
