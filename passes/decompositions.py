"""The decomposition table handed to AOTAutograd.

Ops listed here are traced into simpler aten ops, so the fusion planner sees pointwise chains
instead of opaque activation kernels. Compute-intensive ops (mm, convolution, attention) and ops
whose ATen kernel is already one fused pass (layer_norm, softmax) are *not* decomposed.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch._decomp import get_decompositions

aten = torch.ops.aten

# Activations and their backward ops that decompose into a handful of pointwise ops.
_DECOMPOSED_OPS = [
    aten.silu,
    aten.silu_backward,
    aten.softplus,
    aten.softplus_backward,
    aten.hardswish,
    aten.hardswish_backward,
    aten.hardsigmoid,
    aten.hardsigmoid_backward,
    aten.elu,
    aten.elu_backward,
    aten.leaky_relu,
    aten.leaky_relu_backward,
    aten.mish,
    aten.mish_backward,
    aten.hardtanh,
    aten.hardtanh_backward,
    aten.threshold_backward,
    aten.sigmoid_backward,
    aten.tanh_backward,
    aten.gelu_backward,
    aten.addcmul,
    aten.addcdiv,
    aten.lerp,
    aten.xlogy,
    # Row ops: decomposed into reductions + pointwise so that the fusion planner builds one row
    # kernel each (with their prologue and epilogue) instead of calling ATen's fused kernel.
    aten._softmax,
    aten._log_softmax,
    aten._softmax_backward_data,
    aten._log_softmax_backward_data,
    aten.native_layer_norm,
    aten.native_layer_norm_backward,
    aten.var,
    aten.var_mean,
    aten.std,
    aten.std_mean,
    aten.logsumexp,
    *[getattr(aten, name) for name in ("_fused_rms_norm", "_fused_rms_norm_backward") if hasattr(aten, name)],
]


def decomposition_table(config: Any = None) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """aten op → decomposition. Empty with ``fusion=False``: then every op runs as one ATen call,
    and a decomposed activation would only cost extra kernel launches."""
    if config is not None and not config.fusion:
        return {}
    return get_decompositions(_DECOMPOSED_OPS)
