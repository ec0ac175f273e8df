"""The decomposition table handed to AOTAutograd.

Ops listed here are traced into simpler aten ops, so the fusion planner sees pointwise chains
instead of opaque activation kernels. Compute-intensive ops (mm, convolution, attention) and ops
whose ATen kernel is already one fused pass (layer_norm, softmax) are *not* decomposed.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch._decomp import get_decompositions

from ait_dynamo.kernels import max_pool_offsets

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
    aten.logsumexp,
    *[getattr(aten, name) for name in ("_fused_rms_norm", "_fused_rms_norm_backward") if hasattr(aten, name)],
    # Inference batch norm (issue 13): pointwise work that fuses with the convolution's consumers
    # (ReLU, residual add) instead of its own ATen pass. Training batch norm stays ATen for now,
    # for speed, not accuracy. Accuracy: with torch's decompositions of
    # _native_batch_norm_legit_functional and native_batch_norm_backward, a bf16 conv-BN-add-ReLU
    # training step (8x6x12x12, CPU interpreter) is as accurate as eager: over 10 seeds the
    # median RMSE against fp64 is 0.88x eager's on the output and 1.00-1.04x on every gradient
    # (per seed 0.4-5.6x either way: one seed is noise, which is what an earlier single-seed
    # reading of 1.4-2.0x was), NCHW and channels-last alike; a variant keeping the saved
    # statistics in float32 gave the same (benchmarks/results/cpu-triton-interpreter/batch_norm_training/).
    # Speed: the variance reads the mean, and the planner used to keep both in one two-pass
    # kernel that a column reduction cannot split over programs (kernels/column_reduction.py):
    # channels-last, ResNet-50's first batch norm would reduce 401k rows on one program. Now
    # readers of a column group's sums stay out of it where it would split (Planner._keeps_apart):
    # on the CPU interpreter a channels-last block's forward is the mean (split), the centred
    # squares' sum (split) and a pointwise normalisation, and its backward likewise. Still to
    # come: the values those kernels share (x.float(), x - mean) are written as full-size
    # outputs where recomputing them in each kernel would cost nothing. The option
    # fused_batch_norm_training turns the decompositions on; not yet measured on a GPU.
    aten._native_batch_norm_legit_no_training,
    aten._native_batch_norm_legit.default,  # what the inference decomposition calls (training=False)
]


# Option fused_batch_norm_training: torch's decompositions (the statistics in float32 from low
# precision inputs). The planner keeps the normalisation out of the statistics' column kernels so
# that those split over programs (passes/fusion.py, Planner._keeps_apart).
_TRAINING_BATCH_NORM = [aten._native_batch_norm_legit_functional, aten.native_batch_norm_backward]


def _reduced_count(x: torch.Tensor, dims: Any) -> Any:
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return x.numel()
    dims = [dims] if isinstance(dims, int) else dims
    count = 1
    for d in dims:
        count = count * x.shape[d]
    return count


def _var_mean(x: torch.Tensor, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> tuple:
    """Two-pass variance in aten sum/sub/mul (torch's own decomposition emits prims.var, which
    the planner cannot fuse). Low-precision inputs are computed in float32, as ATen does."""
    dims = list(range(x.dim())) if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0) else dim
    dims = [dims] if isinstance(dims, int) else list(dims)
    source = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    count = _reduced_count(x, dims)
    mean = aten.sum.dim_IntList(source, dims, True) / count
    centered = source - mean
    total = aten.sum.dim_IntList(centered * centered, dims, keepdim)
    divisor = count - (1 if correction is None else correction)
    var = total / (divisor if not isinstance(divisor, (int, float)) or divisor > 0 else 0)
    if not keepdim:
        mean = aten.squeeze.dims(mean, dims)
    return var.to(x.dtype), mean.to(x.dtype)


def _var(x: torch.Tensor, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> torch.Tensor:
    return _var_mean(x, dim, correction=correction, keepdim=keepdim)[0]


def _std(x: torch.Tensor, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> torch.Tensor:
    var = _var_mean(x, dim, correction=correction, keepdim=keepdim)[0]
    return aten.sqrt.default(var.float() if var.dtype in (torch.float16, torch.bfloat16) else var).to(x.dtype)


def _std_mean(x: torch.Tensor, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> tuple:
    var, mean = _var_mean(x, dim, correction=correction, keepdim=keepdim)
    return aten.sqrt.default(var.float() if var.dtype in (torch.float16, torch.bfloat16) else var).to(x.dtype), mean


def _select_backward(grad: torch.Tensor, input_sizes: Any, dim: int, index: int) -> torch.Tensor:
    """The gradient of ``x.select(dim, index)``: ``grad`` at that index along ``dim``, zeros
    elsewhere, written as a masked broadcast so that it fuses into its consumer. ATen's form
    (zeros, then a copy into the slice) cost ViT-B/16's backward 37 fills and 36 copies, 1.8 ms
    a step on the H200, and a later kernel then read the mostly-zero tensors
    (training_cuda_graphs/before_kernel_fixes_7fd5019/vit_b16_ait.txt)."""
    if not isinstance(index, int):
        return NotImplemented  # a symbolic index may be negative: keep ATen's op
    rank = len(input_sizes)
    dim = dim % rank
    size = input_sizes[dim]
    if index < 0:
        index = index + size
    positions = aten.arange.start_step(0, size, 1, dtype=torch.int64, device=grad.device)
    positions = aten.view.default(positions, [size] + [1] * (rank - dim - 1))
    spread = aten.expand.default(aten.unsqueeze.default(grad, dim), list(input_sizes))
    return aten.masked_fill.Scalar(spread, aten.ne.Scalar(positions, index), 0)


_OWN_DECOMPOSITIONS: dict[Any, Callable[..., Any]] = {
    # int8 window offsets saved instead of int64 indices, and our gather kernel for the backward
    aten.max_pool2d_with_indices_backward.default: max_pool_offsets.decompose_backward,
    aten.select_backward.default: _select_backward,
    aten.var_mean.correction: _var_mean,
    aten.var.correction: _var,
    aten.std.correction: _std,
    aten.std_mean.correction: _std_mean,
}


def decomposition_table(config: Any = None) -> dict[torch._ops.OpOverload, Callable[..., Any]]:
    """aten op → decomposition. Empty with ``fusion=False``: then every op runs as one ATen call,
    and a decomposed activation would only cost extra kernel launches."""
    if config is not None and not config.fusion:
        return {}
    table = get_decompositions(_DECOMPOSED_OPS)
    table.update(_OWN_DECOMPOSITIONS)
    if config is not None and config.fused_batch_norm_training:
        table.update(get_decompositions(_TRAINING_BATCH_NORM))
    if config is not None and not config.fallback_random:
        # dropout → rand_like + compare + scale, generated in-kernel with Philox (kernels/op_table.py)
        table.update(get_decompositions([aten.native_dropout, aten.native_dropout_backward]))
    return table
