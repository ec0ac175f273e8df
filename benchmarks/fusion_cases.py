"""The fusion suite: memory-bound kernels where fusion decides the time (``python -m benchmarks fusion``).

  pointwise_chain_fwd / _fwdbwd   a 12-op pointwise chain on 8192x8192 fp32 (forward; forward + backward)
  softmax_<shape>_<dtype>         softmax over the last dim of (32768, 768) and (4096, 4096) in fp16,
                                  bf16 and fp32, forward + backward
  layer_norm_<shape>_<dtype>      affine layer_norm, same shapes and dtypes, forward + backward
and seed 004's ``tutorial_8192x8192`` (``FUSION_EXTRA``: a seed workload the fusion run takes too).

Names give the seed-scale shape; ``small`` and ``tiny`` shrink it (the record's ``input`` says
which). The backward feeds a random gradient (``out.backward(g)``), so that it reads one as a
network's would. Each case declares ``bytes_moved``, the least bytes a fused implementation
reads and writes, from which the tables give GB/s. A new case is one more entry in ``_table``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from benchmarks.workload_types import Built, BuildFn, Workload, precision_name, randn

# Seed workloads (workloads.py) the fusion run also takes.
FUSION_EXTRA = ("tutorial_8192x8192",)

_SQUARE = {"seed": (8192, 8192), "small": (1024, 1024), "tiny": (16, 32)}
# the two row shapes of the softmax / layer_norm cases at each scale, in the order of ROW_SHAPES
_ROWS = {"seed": ((32768, 768), (4096, 4096)), "small": ((512, 768), (256, 1024)), "tiny": ((8, 24), (4, 32))}
ROW_SHAPES = _ROWS["seed"]
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def pointwise_chain(x: torch.Tensor) -> torch.Tensor:
    y = x * 1.5 + 0.5
    y = torch.sigmoid(y) * x
    y = torch.tanh(y) + x.exp() * 0.1
    y = torch.where(y > 0, y, y * 0.01)
    return (y * y + 1).rsqrt() - 0.5


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, -1)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], weight, bias)


def _desc(x: torch.Tensor) -> str:
    return "x".join(str(s) for s in x.shape) + " " + precision_name(x.dtype)


def _pointwise(backward: bool) -> BuildFn:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        x = randn(*_SQUARE[scale], device=device, dtype=torch.float32, requires_grad=backward)
        if not backward:  # read x, write y
            return Built(pointwise_chain, (x,), "inference", "float32", _desc(x), bytes_moved=2 * x.nbytes)
        # and the backward: read x and the gradient, write x's gradient
        return Built(pointwise_chain, (x,), "fwd_bwd", "float32", _desc(x), grad_output=torch.randn_like(x),
                     bytes_moved=4 * x.nbytes)

    return build


def _rows(fn: Callable[..., torch.Tensor], shape_index: int, dtype: torch.dtype, affine: bool) -> BuildFn:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        shape = _ROWS[scale][shape_index]
        x = randn(*shape, device=device, dtype=dtype, requires_grad=True)
        params = tuple(randn(shape[-1], device=device, dtype=dtype, requires_grad=True) for _ in range(2)) if affine else ()
        # forward: read x, write y; backward: read y (or x) and the gradient, write x's gradient
        return Built(fn, (x, *params), "fwd_bwd", precision_name(dtype), _desc(x),
                     grad_output=torch.randn_like(x).detach(), bytes_moved=5 * x.nbytes)

    return build


def _table() -> list[Workload]:
    table = [
        Workload("pointwise_chain_fwd", "fusion", "inference", "12-op pointwise chain, forward", _pointwise(False),
                 suite="fusion"),
        Workload("pointwise_chain_fwdbwd", "fusion", "fwd_bwd", "12-op pointwise chain, forward + backward",
                 _pointwise(True), suite="fusion"),
    ]
    for index, (rows, cols) in enumerate(ROW_SHAPES):
        for dtype in DTYPES:
            tag = f"{rows}x{cols}_{precision_name(dtype)}"
            table.append(Workload(f"softmax_{tag}", "fusion", "fwd_bwd", "softmax(x, -1), forward + backward",
                                  _rows(softmax, index, dtype, affine=False), suite="fusion"))
            table.append(Workload(f"layer_norm_{tag}", "fusion", "fwd_bwd", "affine layer_norm, forward + backward",
                                  _rows(layer_norm, index, dtype, affine=True), suite="fusion"))
    return table


FUSION_WORKLOADS: tuple[Workload, ...] = tuple(_table())
