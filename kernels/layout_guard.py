"""The first call checks the layouts the generated kernels were written for.

A kernel indexes its inputs with the strides of the trace's fake tensors. For the graph's inputs
and for what kernels compute, those are the real strides; for values an ATen call returns (a
convolution through cuDNN, a pooling, a batch norm) they are what the op's meta function
predicts, and a prediction that differs from the real kernel (a layout choice of cuDNN's, an
older torch's meta function) would make every later read wrong without an error.

So the wrapper's first call runs a body that compares each such value with its traced sizes and
strides (``LayoutGuard.expect``). Where they agree, later calls run the plain body and pay
nothing. Where one differs, a warning names the op, the value is copied into the traced layout
(the kernels then read exactly what they were written for), and later calls keep running the
checking body, so the copy happens on every call at that site only.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch


class LayoutGuard:
    def __init__(self) -> None:
        self.mismatched: set[str] = set()  # values whose real layout differed from the trace

    def expect(self, value: torch.Tensor, size: Sequence[int], stride: Sequence[int], name: str, op: str) -> torch.Tensor:
        """``value`` if it has the traced ``size`` and ``stride`` (along dims of size > 1, where a
        stride addresses something), else a copy of it laid out so."""
        if has_layout(value, size, stride):
            return value
        if tuple(value.shape) != tuple(size):
            raise RuntimeError(f"ait_dynamo: {op} returned {name} of size {tuple(value.shape)} where the trace "
                               f"said {tuple(size)}; the compiled graph cannot run on it")
        if name not in self.mismatched:
            self.mismatched.add(name)
            warnings.warn(
                f"ait_dynamo: {op} returned {name} with strides {value.stride()} where the trace said "
                f"{tuple(stride)}; it is copied into the traced layout before the generated kernels and views read it",
                RuntimeWarning,
                stacklevel=3,
            )
        return laid_out(value, size, stride)


def has_layout(value: torch.Tensor, size: Sequence[int], stride: Sequence[int]) -> bool:
    """Whether ``value`` has ``size`` and, along dims of more than one element, ``stride``."""
    return tuple(value.shape) == tuple(size) and all(s == t for n, s, t in zip(size, value.stride(), stride) if n > 1)


def laid_out(value: torch.Tensor, size: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """``value`` if it has that layout, else a copy of it that has."""
    if has_layout(value, size, stride):
        return value
    return torch.empty_strided(tuple(size), tuple(stride), dtype=value.dtype, device=value.device).copy_(value)
