"""float32 linear layers through MKL's packed GEMM on the CPU: ``ait::mkl_linear``.

ATen's ``addmm`` on a CPU calls MKL's ``sgemm``, which packs the weight into its blocked layout
on every call. ``mkl._mkl_reorder_linear_weight`` packs it once and ``mkl._mkl_linear`` multiplies
with the packed copy: on the 2-core CI Xeon, at the CPU main job's shapes, 5-14% less time per
GEMM at five of six shapes, 9% more at the sixth (``benchmarks/results/cpu-xeon/mkl_packed/``).
Same library: the results were 0 to 9e-5 apart from ``addmm``'s at those shapes.

The packed copy is kept per weight tensor (weakly: it goes with the weight) and is made again when
the weight changes: its version counter moves with every in-place write (an optimizer step, a
``copy_`` under ``no_grad``), and its data pointer with ``.data`` assignment. So the pass
(``passes/onednn_gemm.py``) takes it only for inference graphs, whose weights are not written
between calls; anywhere else it would still be right, but pack on every call.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ait_dynamo.kernels import source

_packed: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> ((version, data_ptr, rows), packed)


def available() -> bool:
    """Whether this torch has MKL's packed linear (x86 builds with MKL)."""
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear") \
        and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")


def packed_weight(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` ([N, K], contiguous float32) in MKL's packed layout, packed once per version."""
    stamp = (weight._version, weight.data_ptr(), rows)
    entry = _packed.get(weight)
    if entry is None or entry[0] != stamp:
        entry = (stamp, torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), rows))
        _packed[weight] = entry
    return entry[1]


def call(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x @ weight.T + bias`` for a 2-d ``x`` (the generated wrapper binds this directly)."""
    rows = x.shape[0]
    return torch.ops.mkl._mkl_linear(x, packed_weight(weight, rows), weight, bias, rows)


@torch.library.custom_op("ait::mkl_linear", mutates_args=(), device_types="cpu")
def mkl_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return call(x, weight, bias)


@mkl_linear.register_fake
def _(x, weight, bias):  # type: ignore[no-untyped-def]
    return x.new_empty((x.shape[0], weight.shape[0]))


source.DIRECT_FUNCTIONS[torch.ops.ait.mkl_linear.default] = (__name__, "call")
