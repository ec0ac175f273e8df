"""Max pooling's backward from int8 window offsets instead of int64 indices (issue 13).

In training, ``max_pool2d_with_indices`` hands its backward the int64 flat index of each window's
maximum: ResNet-50's stem pool saves 49 MiB of them at bf16 batch 32, live at the step's peak,
and ATen's channels-last backward kernel took 238 us a step on the H200 for about 71 MB of
traffic (benchmarks/results/nvidia-h200/bn_relu_fold/). Inductor saves the offset of the maximum
inside its window instead, one byte.

``passes/decompositions.py`` traces ``max_pool2d_with_indices_backward`` as
:func:`window_offsets` of the indices (pointwise ops, which the partitioner places in the forward
and whose int8 result it saves) and ``ait::max_pool2d_offsets_backward``, which gathers each
input position's gradient from the (at most ``ceil(((kernel - 1) * dilation + 1) / stride)``
squared) windows that can hold it: one Triton kernel that writes every element once, where
ATen's zero-fills and scatters. In that ResNet-50 step it took 75 us against ATen's 238 (floor
about 17 us), and the step's kernels 7.03 ms against Inductor's 7.15. Where Triton does not run,
or the kernel fails (warned once), the indices are rebuilt from the offsets and ATen's backward
runs, with the same result.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ait_dynamo.kernels import runtime, source

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch on Linux
    triton = None  # type: ignore[assignment]

aten = torch.ops.aten

MOST_TAPS = 127  # offsets are int8


def _pair(value: Sequence[int] | int, default: Sequence[int] | None = None) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    value = list(value) or list(default or [])
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def window_offsets(indices: torch.Tensor, width: int, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """The int8 offset ``tap_row * kernel_width + tap_column`` of each maximum inside its window,
    from ATen's flat indices into an input ``width`` wide (traced as pointwise ops)."""
    out_rows, out_columns = indices.shape[-2:]
    rows = torch.div(indices, width, rounding_mode="floor")
    columns = indices - rows * width
    window_row = torch.arange(out_rows, device=indices.device).view(-1, 1) * stride[0] - padding[0]
    window_column = torch.arange(out_columns, device=indices.device) * stride[1] - padding[1]
    tap_row, tap_column = rows - window_row, columns - window_column
    if dilation[0] != 1:
        tap_row = torch.div(tap_row, dilation[0], rounding_mode="floor")
    if dilation[1] != 1:
        tap_column = torch.div(tap_column, dilation[1], rounding_mode="floor")
    return (tap_row * kernel[1] + tap_column).to(torch.int8)


def _indices(offsets: torch.Tensor, width: int, kernel: tuple[int, int], stride: tuple[int, int],
             padding: tuple[int, int], dilation: tuple[int, int]) -> torch.Tensor:
    """ATen's flat indices back from :func:`window_offsets`."""
    out_rows, out_columns = offsets.shape[-2:]
    offsets = offsets.long()
    tap_row = torch.div(offsets, kernel[1], rounding_mode="floor")
    tap_column = offsets - tap_row * kernel[1]
    row = torch.arange(out_rows, device=offsets.device).view(-1, 1) * stride[0] - padding[0] + tap_row * dilation[0]
    column = torch.arange(out_columns, device=offsets.device) * stride[1] - padding[1] + tap_column * dilation[1]
    return row * width + column


if triton is not None:

    @triton.jit
    def _unflatten(index, inner, middle, outer):
        """The coordinates of a flat index over dims of sizes ``inner``, ``middle``, ``outer`` and
        one more, innermost first."""
        rest = index // inner
        deeper = rest // middle
        return index % inner, rest % middle, deeper % outer, deeper // outer

    @triton.jit
    def _offsets_backward_kernel(grad_ptr, offsets_ptr, out_ptr, total, channels, height, width, out_rows, out_columns,
                                 grad_sn, grad_sc, grad_sh, grad_sw, off_sn, off_sc, off_sh, off_sw,
                                 out_sn, out_sc, out_sh, out_sw, KH: tl.constexpr, KW: tl.constexpr,
                                 SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                                 DH: tl.constexpr, DW: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr,
                                 CHANNELS_LAST: tl.constexpr, WIDE: tl.constexpr, BLOCK: tl.constexpr):
        # int32 index arithmetic unless a tensor holds 2**31 elements: its divisions are the
        # kernel's main cost
        start = tl.program_id(0).to(tl.int64) * BLOCK if WIDE else tl.program_id(0) * BLOCK
        index = start + tl.arange(0, BLOCK)
        mask = index < total
        # the input position of each element, walked in the gradient's memory order
        if CHANNELS_LAST:
            c, w, h, n = _unflatten(index, channels, width, height)
        else:
            w, h, c, n = _unflatten(index, width, height, channels)
        total_gradient = tl.zeros([BLOCK], dtype=tl.float32)
        last_row = (h + PH) // SH  # the last window that starts at or above this row
        last_column = (w + PW) // SW
        for i in tl.static_range(TAPS_H):
            row = last_row - i
            from_top = h + PH - row * SH
            tap_row = from_top // DH
            row_ok = (row >= 0) & (row < out_rows) & (from_top % DH == 0) & (tap_row < KH)
            for j in tl.static_range(TAPS_W):
                column = last_column - j
                from_left = w + PW - column * SW
                tap_column = from_left // DW
                ok = mask & row_ok & (column >= 0) & (column < out_columns) & (from_left % DW == 0) & (tap_column < KW)
                offset = tl.load(offsets_ptr + n * off_sn + c * off_sc + row * off_sh + column * off_sw, mask=ok,
                                 other=-1)
                hit = ok & (offset.to(tl.int32) == tap_row * KW + tap_column)
                gradient = tl.load(grad_ptr + n * grad_sn + c * grad_sc + row * grad_sh + column * grad_sw,
                                   mask=hit, other=0.0)
                total_gradient += gradient.to(tl.float32)
        tl.store(out_ptr + n * out_sn + c * out_sc + h * out_sh + w * out_sw,
                 total_gradient.to(out_ptr.dtype.element_ty), mask=mask)


def _as_4d(value: torch.Tensor) -> torch.Tensor:
    return value if value.dim() == 4 else value.unsqueeze(0)


def _result_like(value: torch.Tensor) -> torch.Tensor:
    """An empty gradient for ``value``, in the memory format ATen's backward gives it."""
    if value.dim() == 4:
        return torch.empty_like(value, memory_format=torch._prims_common.suggest_memory_format(value))
    return torch.empty_like(value, memory_format=torch.contiguous_format)


def offsets_backward(grad_output: torch.Tensor, input: torch.Tensor, kernel_size: Sequence[int],
                     stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                     offsets: torch.Tensor) -> torch.Tensor:
    """``max_pool2d_with_indices_backward`` from :func:`window_offsets` (the op, without the
    dispatcher: the generated wrapper calls it directly)."""
    kernel = _pair(kernel_size)
    strides = _pair(stride, kernel)
    pads, dilations = _pair(padding), _pair(dilation)
    width = input.shape[-1]

    def fallback() -> torch.Tensor:
        indices = _indices(offsets, width, kernel, strides, pads, dilations)
        return aten.max_pool2d_with_indices_backward.default(grad_output, input, list(kernel), list(strides),
                                                            list(pads), list(dilations), ceil_mode, indices)

    if not runtime.triton_runs_on(input.device.type) or _offsets_backward_kernel in runtime.BROKEN:
        return fallback()
    result = _result_like(input)
    if result.numel() == 0:
        return result
    grad4, offsets4, result4 = _as_4d(grad_output), _as_4d(offsets), _as_4d(result)
    batch, channels, height, width = result4.shape
    # walk the gradient in its memory order, so that its stores coalesce
    channels_last = not result4.is_contiguous() and result4.is_contiguous(memory_format=torch.channels_last)
    taps = [math.ceil(((k - 1) * d + 1) / s) for k, d, s in zip(kernel, dilations, strides)]
    block = 1024 if not runtime.INTERPRETING else 256
    args = (grad4, offsets4, result4, result4.numel(), channels, height, width, grad4.shape[2], grad4.shape[3],
            *grad4.stride(), *offsets4.stride(), *result4.stride())
    constexprs = {"KH": kernel[0], "KW": kernel[1], "SH": strides[0], "SW": strides[1], "PH": pads[0], "PW": pads[1],
                  "DH": dilations[0], "DW": dilations[1], "TAPS_H": taps[0], "TAPS_W": taps[1],
                  "CHANNELS_LAST": channels_last,
                  "WIDE": max(grad4.numel(), offsets4.numel(), result4.numel()) >= 2 ** 31, "BLOCK": block}
    try:
        runtime.launch(_offsets_backward_kernel, (triton.cdiv(result4.numel(), block),), args, constexprs, 4)
    except Exception as error:  # a Triton compile or launch error: ATen from now on
        runtime.mark_broken(_offsets_backward_kernel, error)  # warns once (out of memory propagates)
        return fallback()
    return result


@torch.library.custom_op("ait::max_pool2d_offsets_backward", mutates_args=())
def max_pool2d_offsets_backward(grad_output: torch.Tensor, input: torch.Tensor, kernel_size: list[int],
                                stride: list[int], padding: list[int], dilation: list[int], ceil_mode: bool,
                                offsets: torch.Tensor) -> torch.Tensor:
    return offsets_backward(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode, offsets)


@max_pool2d_offsets_backward.register_fake
def _(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode, offsets):  # type: ignore[no-untyped-def]
    return _result_like(input)


source.DIRECT_FUNCTIONS[torch.ops.ait.max_pool2d_offsets_backward.default] = (__name__, "offsets_backward")


def decompose_backward(grad_output: torch.Tensor, input: torch.Tensor, kernel_size: Sequence[int],
                       stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                       indices: torch.Tensor) -> torch.Tensor:
    """The decomposition of ``max_pool2d_with_indices_backward`` (``NotImplemented`` where the
    window has more taps than an int8 holds)."""
    kernel = _pair(kernel_size)
    if kernel[0] * kernel[1] > MOST_TAPS or input.dim() not in (3, 4):
        return NotImplemented
    strides, pads, dilations = _pair(stride, kernel), _pair(padding), _pair(dilation)
    offsets = window_offsets(indices, input.shape[-1], kernel, strides, pads, dilations)
    return torch.ops.ait.max_pool2d_offsets_backward(grad_output, input, list(kernel), list(strides), list(pads),
                                                    list(dilations), ceil_mode, offsets)
