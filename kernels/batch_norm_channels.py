"""Training batch norm's two per-channel reductions, for inputs laid out as rows of channels
(channels-last activations, or 2-d ``(N, C)``): the statistics of the forward, the gradient sums of
the backward. ``passes/batch_norm_split.py`` and ``passes/batch_norm_backward_split.py`` call
these where ATen's kernels ran.

Why our own kernels: in ResNet-50's bf16 training step (batch 32, H200) ATen's channels-last
statistics kernel took 1.384 ms a step and its backward reduction 1.032 ms, for 711 MB and
1.42 GB read: 0.18 and 0.36 ms at the measured 4 TB/s copy rate
(benchmarks/results/nvidia-h200/depthwise/resnet50_train_profile_ait_8204cd8.txt).

Each reduction is one launch, in two phases:

* **Partials**, on a grid of (channel blocks, row splits): each program walks its rows in
  ``[BLOCK_M, BLOCK_C]`` tiles into a register accumulator of that shape, so no cross-thread
  reduction runs inside the loop. The splits are chosen at compile time for about four programs
  per multiprocessor.
  - The statistics run Welford's update in every register lane, then combine the lanes by Chan's
    formula: each split hands over a mean and a centred sum of squares. They run on ``x - K``,
    ``K`` the mean of the first tile's rows: for values near their mean that subtraction is
    exact, and what Welford then rounds is small. On the CPU interpreter, with a mean 2e4
    deviations from zero, plain float32 Welford (ATen's kernel's method) lost 1e-4 of the inverse
    deviation, sums of squares shifted by one row 3e-5, Welford shifted by the first row ~1e-7.
    One row as ``K`` was not enough: with an outlier first row (1e4, the rest deviations of 0.5
    around 0) the mean lost 6e-4; a mean over a tile dilutes the outlier 64-fold or more.
  - The backward accumulates ``dy`` and ``dy * (x - mean)``; given a ReLU's output as ``gate``,
    it masks ``dy`` as it loads it (the ReLU's backward, folded in).
* **Finish**, in the last program of each channel block to store its partials (a ticket counter
  per block, taken with release/acquire atomics and reset by that program): it combines the
  splits in a fixed order (Chan's formula for the statistics), so every call gives the same bits,
  and writes what the callers read. For the forward, that is the mean, the inverse deviation and
  the running statistics updated in place as ATen does (``momentum * batch + (1 - momentum) *
  running``, the variance unbiased). For the backward, it is the weight and bias gradients and
  the three per-channel factors of the input gradient, which the graph computes as pointwise ops
  that fuse with their neighbours. As a second kernel, the finish took 4.5-5.4 us a call on the
  H200, 0.52 ms of ResNet-50's training step, mostly launch and tail.

A launch that fails (a Triton error) warns once and the reduction runs through ATen ops from then
on, with the same results up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ait_dynamo.kernels import runtime
from ait_dynamo.kernels.bound_kernel import BoundKernel

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch on Linux
    triton = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ChannelGrid:
    """How a reduction over ``rows`` rows of ``channels`` values is spread: splits of
    ``rows_per_split`` rows (a multiple of ``block_m``), channel blocks of ``block_c``."""

    rows: int
    channels: int
    rows_per_split: int
    splits: int
    block_m: int
    block_c: int
    num_warps: int

    def fields(self) -> tuple[int, ...]:
        """The grid as the plain ints a graph node passes (``ChannelGrid(*fields)`` rebuilds it)."""
        return (self.rows, self.channels, self.rows_per_split, self.splits, self.block_m, self.block_c,
                self.num_warps)


def _power_of_2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


_MOST_SPLITS = 256  # what a finishing program combines, 16 splits a step


def channel_grid(rows: int, channels: int, multiprocessors: int, tile: int = 4096, num_warps: int = 4,
                 per_multiprocessor: int = 4) -> ChannelGrid:
    """The grid for ``rows`` x ``channels``. A tile holds ``tile`` values (4096: 32 float32
    registers a thread in 4 warps) and 64 channels at most: 128 bytes of a bf16 row, one coalesced
    segment. Splits aim at ``per_multiprocessor`` programs per multiprocessor; each split walks
    at least two tiles."""
    block_c = min(64, _power_of_2_at_least(channels))
    block_m = max(16, tile // block_c)
    channel_blocks = math.ceil(channels / block_c)
    wanted = max(1, math.ceil(per_multiprocessor * multiprocessors / channel_blocks))
    most = max(1, min(_MOST_SPLITS, math.ceil(rows / (2 * block_m))))
    splits = min(wanted, most)
    rows_per_split = math.ceil(math.ceil(rows / splits) / block_m) * block_m
    splits = math.ceil(rows / rows_per_split)
    return ChannelGrid(rows, channels, rows_per_split, splits, block_m, block_c, num_warps)


def is_rows_of_channels(value: torch.Tensor) -> bool:
    """True where ``value`` (N, C, ...) is laid out as dense rows of C channels: channel stride 1,
    the other dims nested in order (N outermost) with no gaps, as channels-last tensors are."""
    if value.dim() < 2 or value.layout != torch.strided:
        return False
    order = [0] + list(range(2, value.dim())) + [1]
    expected = 1
    for dim in reversed(order):
        if value.shape[dim] != 1 and value.stride(dim) != expected:
            return False
        expected *= value.shape[dim]
    return True


if triton is not None:

    @triton.jit
    def _welford_combine(mean_a, m2_a, count_a, mean_b, m2_b, count_b):
        count = count_a + count_b
        weight_b = tl.where(count == 0.0, 0.0, count_b / tl.maximum(count, 1.0))
        delta = mean_b - mean_a
        return mean_a + delta * weight_b, m2_a + m2_b + delta * delta * count_a * weight_b, count

    @triton.jit
    def _program_block(rows, channels, rows_per_split, BLOCK_C: tl.constexpr):
        """This program's channels (and their mask) and its rows ``[start, end)``."""
        cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        start = tl.program_id(1) * rows_per_split
        return cols, cols < channels, start, tl.minimum(start + rows_per_split, rows)

    @triton.jit
    def _statistics_kernel(x_ptr, partial_ptr, counter_ptr, mean_ptr, invstd_ptr, running_mean_ptr, running_var_ptr,
                           rows, channels, rows_per_split, splits, eps, momentum, RUNNING: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, SPLIT_BLOCK: tl.constexpr):
        cols, col_mask, start, end = _program_block(rows, channels, rows_per_split, BLOCK_C)
        # Welford in every register lane on x - K, K the mean of the first tile's rows (every
        # program computes the same K; split 0 hands it to the finish), then the lanes combined
        # by Chan's formula
        head_rows = tl.arange(0, BLOCK_M)
        head_mask = (head_rows < rows)[:, None] & col_mask[None, :]
        head = tl.load(x_ptr + head_rows[:, None] * channels + cols[None, :], mask=head_mask, other=0.0)
        shift = tl.sum(head.to(tl.float32), axis=0) / tl.minimum(rows, BLOCK_M).to(tl.float32)
        if tl.program_id(1) == 0:
            tl.store(partial_ptr + 2 * splits * channels + cols, shift, mask=col_mask)
        mean = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        count = tl.zeros([BLOCK_M], dtype=tl.float32)
        for first in range(start, end, BLOCK_M):
            offsets = first + tl.arange(0, BLOCK_M)
            row_mask = offsets < end
            mask = row_mask[:, None] & col_mask[None, :]
            x = tl.load(x_ptr + offsets.to(tl.int64)[:, None] * channels + cols[None, :], mask=mask, other=0.0)
            x = x.to(tl.float32) - shift[None, :]
            count += row_mask.to(tl.float32)
            delta = tl.where(mask, x - mean, 0.0)
            mean += delta * (1.0 / tl.maximum(count, 1.0))[:, None]
            m2 += delta * (x - mean)
        counts = tl.broadcast_to(count[:, None], (BLOCK_M, BLOCK_C))
        mean, m2, _ = tl.reduce((mean, m2, counts), 0, _welford_combine)
        split = tl.program_id(1)
        tl.store(partial_ptr + split * channels + cols, mean, mask=col_mask)
        tl.store(partial_ptr + (splits + split) * channels + cols, m2, mask=col_mask)
        if _last_to_arrive(counter_ptr, splits):
            _statistics_finish(partial_ptr, mean_ptr, invstd_ptr, running_mean_ptr, running_var_ptr, cols, col_mask,
                               rows, channels, rows_per_split, splits, eps, momentum, RUNNING, SPLIT_BLOCK, BLOCK_C)
            tl.atomic_xchg(counter_ptr + tl.program_id(0), 0)  # ready for the next call

    @triton.jit
    def _last_to_arrive(counter_ptr, splits):
        """True in the last program of its channel block to store its partial results: a ticket,
        taken after every thread's stores (release) and read with acquire semantics."""
        tl.debug_barrier()
        ticket = tl.atomic_add(counter_ptr + tl.program_id(0), 1, sem="acq_rel")
        return ticket == splits - 1

    @triton.jit
    def _statistics_finish(partial_ptr, mean_ptr, invstd_ptr, running_mean_ptr, running_var_ptr, cols, col_mask,
                           rows, channels, rows_per_split, splits, eps, momentum,
                           RUNNING: tl.constexpr, SPLIT_BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
        tl.debug_barrier()  # every thread's loads after the ticket's acquire
        count = tl.zeros([SPLIT_BLOCK, BLOCK_C], dtype=tl.float32)
        mean = tl.zeros([SPLIT_BLOCK, BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([SPLIT_BLOCK, BLOCK_C], dtype=tl.float32)
        # SPLIT_BLOCK splits at a time, each lane combining its own (a reduction per step, or one
        # split per step, made a chain of dependent loads: 7.7 us a call in ResNet-50), then the
        # lanes; a fixed order: the same bits on every call
        for first in range(0, splits, SPLIT_BLOCK):
            split = first + tl.arange(0, SPLIT_BLOCK)
            split_mask = split < splits
            mask = split_mask[:, None] & col_mask[None, :]
            n = tl.where(split_mask, tl.minimum(rows_per_split, rows - split * rows_per_split), 0).to(tl.float32)
            at = split[:, None] * channels + cols[None, :]
            split_mean = tl.load(partial_ptr + at, mask=mask, other=0.0, cache_modifier=".cg")
            split_m2 = tl.load(partial_ptr + splits * channels + at, mask=mask, other=0.0, cache_modifier=".cg")
            counts = tl.broadcast_to(n[:, None], (SPLIT_BLOCK, BLOCK_C))
            mean, m2, count = _welford_combine(mean, m2, count, split_mean, split_m2, counts)
        mean, m2, count = tl.reduce((mean, m2, count), 0, _welford_combine)
        invstd = 1.0 / tl.sqrt(m2 / rows + eps)
        mean += tl.load(partial_ptr + 2 * splits * channels + cols, mask=col_mask, other=0.0,
                        cache_modifier=".cg")  # the shift K
        tl.store(mean_ptr + cols, mean, mask=col_mask)
        tl.store(invstd_ptr + cols, invstd, mask=col_mask)
        if RUNNING:
            old_mean = tl.load(running_mean_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
            old_var = tl.load(running_var_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
            new_mean = momentum * mean + (1.0 - momentum) * old_mean
            new_var = momentum * (m2 / (rows - 1)) + (1.0 - momentum) * old_var
            tl.store(running_mean_ptr + cols, new_mean.to(running_mean_ptr.dtype.element_ty), mask=col_mask)
            tl.store(running_var_ptr + cols, new_var.to(running_var_ptr.dtype.element_ty), mask=col_mask)

    @triton.jit
    def _gradient_kernel(dy_ptr, x_ptr, mean_ptr, partial_ptr, counter_ptr, invstd_ptr, weight_ptr, mean_dy_ptr,
                         projection_ptr, scale_ptr, grad_weight_ptr, grad_bias_ptr, gate_ptr, threshold, rows, channels,
                         rows_per_split, splits, AFFINE: tl.constexpr, GATED: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_C: tl.constexpr, SPLIT_BLOCK: tl.constexpr):
        cols, col_mask, start, end = _program_block(rows, channels, rows_per_split, BLOCK_C)
        mean = tl.load(mean_ptr + cols, mask=col_mask, other=0.0)
        sum_dy = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        sum_dy_xmu = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        for first in range(start, end, BLOCK_M):
            offsets = first + tl.arange(0, BLOCK_M)
            mask = (offsets < end)[:, None] & col_mask[None, :]
            at = offsets.to(tl.int64)[:, None] * channels + cols[None, :]
            dy = tl.load(dy_ptr + at, mask=mask, other=0.0).to(tl.float32)
            if GATED:  # a ReLU's backward folded in: dy = where(gate <= threshold, 0, dy)
                gate = tl.load(gate_ptr + at, mask=mask, other=0.0).to(tl.float32)
                dy = tl.where(gate <= threshold, 0.0, dy)
            x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
            sum_dy += dy
            sum_dy_xmu += tl.where(mask, dy * (x - mean[None, :]), 0.0)
        split = tl.program_id(1)
        tl.store(partial_ptr + split * channels + cols, tl.sum(sum_dy, axis=0), mask=col_mask)
        tl.store(partial_ptr + (splits + split) * channels + cols, tl.sum(sum_dy_xmu, axis=0), mask=col_mask)
        if _last_to_arrive(counter_ptr, splits):
            _gradient_finish(partial_ptr, invstd_ptr, weight_ptr, mean_dy_ptr, projection_ptr, scale_ptr,
                             grad_weight_ptr, grad_bias_ptr, cols, col_mask, rows, channels, splits, AFFINE,
                             SPLIT_BLOCK, BLOCK_C)
            tl.atomic_xchg(counter_ptr + tl.program_id(0), 0)  # ready for the next call

    @triton.jit
    def _gradient_finish(partial_ptr, invstd_ptr, weight_ptr, mean_dy_ptr, projection_ptr, scale_ptr,
                         grad_weight_ptr, grad_bias_ptr, cols, col_mask, rows, channels, splits,
                         AFFINE: tl.constexpr, SPLIT_BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
        tl.debug_barrier()  # every thread's loads after the ticket's acquire
        sum_dy = tl.zeros([SPLIT_BLOCK, BLOCK_C], dtype=tl.float32)
        sum_dy_xmu = tl.zeros([SPLIT_BLOCK, BLOCK_C], dtype=tl.float32)
        for first in range(0, splits, SPLIT_BLOCK):  # in a fixed order: the same bits on every call
            split = first + tl.arange(0, SPLIT_BLOCK)
            mask = (split < splits)[:, None] & col_mask[None, :]
            at = split[:, None] * channels + cols[None, :]
            sum_dy += tl.load(partial_ptr + at, mask=mask, other=0.0, cache_modifier=".cg")
            sum_dy_xmu += tl.load(partial_ptr + splits * channels + at, mask=mask, other=0.0, cache_modifier=".cg")
        sum_dy = tl.sum(sum_dy, axis=0)
        sum_dy_xmu = tl.sum(sum_dy_xmu, axis=0)
        invstd = tl.load(invstd_ptr + cols, mask=col_mask, other=0.0)
        scale = invstd
        if AFFINE:
            weight = tl.load(weight_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
            scale = invstd * weight
            tl.store(grad_weight_ptr + cols, (sum_dy_xmu * invstd).to(grad_weight_ptr.dtype.element_ty), mask=col_mask)
            tl.store(grad_bias_ptr + cols, sum_dy.to(grad_bias_ptr.dtype.element_ty), mask=col_mask)
        # grad_input = (dy - mean_dy - (x - mean) * projection) * scale, ATen's elementwise formula
        tl.store(mean_dy_ptr + cols, sum_dy / rows, mask=col_mask)
        tl.store(projection_ptr + cols, sum_dy_xmu / rows * invstd * invstd, mask=col_mask)
        tl.store(scale_ptr + cols, scale, mask=col_mask)


# Splits the finishing program loads at a time. 64 made the statistics kernel 0.837 ms a step
# against 0.725 with 16 (ResNet-50's shapes, H200, micro.py): the finish's registers count for the
# whole kernel, so fewer programs fit a multiprocessor during the main loop.
_SPLIT_BLOCK = 16


class _Scratch:
    """One stream's scratch for these kernels: the tickets, one int32 per channel block, zero
    between calls (the finishing program resets its own), and the splits' partial results,
    rewritten by every call before its finish reads them."""

    __slots__ = ("counters", "partials", "captured")

    def __init__(self, blocks: int, partials: int, device: torch.device):
        self.counters = torch.zeros(blocks, dtype=torch.int32, device=device)
        self.partials = torch.empty(partials, dtype=torch.float32, device=device)
        self.captured = False  # read by a kernel inside a CUDA-graph capture


# (device, stream) → the scratch every call on that stream uses, sized for the largest so far: the
# calls of one stream run one after another, so they can share it; two streams cannot. One set
# per configuration (ResNet-50's 12 batch-norm shapes, statistics and gradient) held 4.4 MiB
# between steps on the H200, above Inductor's memory; the largest configuration needs 0.26 MiB.
# Kept, not allocated per call: an allocation cost ~4 us of host time on the 2-core CPU, and
# ResNet-50's step makes 106 of these calls.
_SCRATCH: dict[tuple[int, int], _Scratch] = {}
# Outgrown scratch that a captured CUDA graph still addresses: its replays write there, so that
# memory must never go back to the allocator.
_CAPTURED_AND_OUTGROWN: list[_Scratch] = []


def _scratch(blocks: int, partials: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The tickets (``blocks`` of them, zero) and room for ``partials`` float32 values, for a
    call on the current stream."""
    cuda = device.type == "cuda"
    key = (device.index or 0, torch._C._cuda_getCurrentRawStream(device.index) if cuda else 0)
    found = _SCRATCH.get(key)
    if found is None or found.counters.numel() < blocks or found.partials.numel() < partials:
        if found is not None and found.captured:
            _CAPTURED_AND_OUTGROWN.append(found)
        sizes = (blocks, partials) if found is None else (max(blocks, found.counters.numel()),
                                                          max(partials, found.partials.numel()))
        found = _SCRATCH[key] = _Scratch(*sizes, device)
    # torch.cuda.is_current_stream_capturing's own call, without its Python frame: this runs per call
    if cuda and not found.captured and torch._C._cuda_isCurrentStreamCapturing():
        found.captured = True
    return found.counters, found.partials


def _rows(count: int, channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``count`` rows of ``channels`` values in one allocation, each row starting 16-byte aligned:
    the kernels are compiled for aligned pointers, and the rows are handed to them as views."""
    per_16_bytes = max(1, 16 // dtype.itemsize)
    stride = -(-channels // per_16_bytes) * per_16_bytes
    return torch.empty_strided((count, channels), (stride, 1), dtype=dtype, device=device)


def _launch_or_fall_back(kernels: tuple[Any, ...], launches: Any, fallback: Any, *read: torch.Tensor) -> Any:
    """``launches()``, or ``fallback()`` after a failure of one of ``kernels`` (warned once) or
    where a tensor in ``read`` is not laid out as traced."""
    # (``k in BROKEN`` hashes a JITFunction by its source key: asked only once something broke)
    broken = bool(runtime.BROKEN) and any(k in runtime.BROKEN for k in kernels)
    if triton is None or broken or not _laid_out_as_traced(*read):
        return fallback()
    try:
        return launches()
    except Exception as error:  # a Triton compile or launch error: ATen ops from now on
        runtime.mark_broken(kernels[0], error)  # warns once (out of memory propagates)
        runtime.BROKEN.update(kernels)
        return fallback()


def _laid_out_as_traced(*values: torch.Tensor) -> bool:
    """The kernels address ``row * channels + channel``: true where each value is laid out so. The
    trace predicted it, but an ATen result (cuDNN's) may come out otherwise; then the ATen
    fallback computes the same values from any layout."""
    for value in values:
        dims = value.dim()
        if dims == 4:
            dense = value.is_contiguous(memory_format=torch.channels_last)
        elif dims == 2:
            dense = value.is_contiguous()
        else:
            dense = is_rows_of_channels(value)
        if not dense:
            return False
    return True


def _reduced_dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


# (kernel, layout, dtypes, device) → the kernel bound at that configuration
_BOUND: dict[tuple, BoundKernel] = {}


def _bound(kernel: Any, layout: tuple[int, ...], flag: dict[str, bool], key: tuple,
           inputs: tuple[int, ...]) -> BoundKernel:
    found = _BOUND.get(key)
    if found is None:
        grid = ChannelGrid(*layout)
        found = _BOUND[key] = BoundKernel(
            kernel, (math.ceil(grid.channels / grid.block_c), grid.splits),
            {**flag, "BLOCK_M": grid.block_m, "BLOCK_C": grid.block_c, "SPLIT_BLOCK": _SPLIT_BLOCK}, grid.num_warps,
            checked=inputs)
    return found


# The positions of the kernels' arguments that come from the caller, whose alignment each call
# checks; the others are the scratch and the rows of ``_rows``, aligned by construction.
_STATISTICS_INPUTS = (0, 5, 6)  # x, running_mean, running_var
_GRADIENT_INPUTS = (0, 1, 2, 5, 6, 12)  # dy, x, mean, invstd, weight, gate


def channel_statistics(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                       momentum: float, eps: float, layout: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and inverse standard deviation of ``x`` (float32, like ATen's
    ``batch_norm_stats``); where given, the running statistics are updated in place. ``layout``:
    the fields of the :class:`ChannelGrid` (the graph holds plain ints)."""
    running = running_mean is not None and running_var is not None
    rows, channels, rows_per_split, splits = layout[:4]  # per call: no ChannelGrid built (~1 us)

    def launches() -> tuple[torch.Tensor, torch.Tensor]:
        key = ("statistics", layout, x.dtype, running and running_mean.dtype, x.device.index)
        kernel = _bound(_statistics_kernel, layout, {"RUNNING": running}, key, _STATISTICS_INPUTS)
        # the splits' means and centred sums of squares, then the shift
        counters, partials = _scratch(kernel.grid[0], (2 * splits + 1) * channels, x.device)
        mean, invstd = _rows(2, channels, torch.float32, x.device).unbind(0)  # one call for both views
        kernel(x, partials, counters, mean, invstd, running_mean if running else mean,
               running_var if running else invstd, rows, channels, rows_per_split,
               splits, float(eps), float(momentum))
        return mean, invstd

    def fallback() -> tuple[torch.Tensor, torch.Tensor]:
        var, mean = torch.var_mean(x.float(), dim=_reduced_dims(x), correction=0)
        if running:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                unbiased = var * (rows / (rows - 1))
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        return mean, torch.rsqrt(var + eps)

    return _launch_or_fall_back(_STATISTICS_KERNELS, launches, fallback, x)


def channel_gradient_sums(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                          weight: torch.Tensor | None, layout: tuple[int, ...], gate: torch.Tensor | None = None,
                          threshold: float = 0.0) -> tuple[torch.Tensor, ...]:
    """The backward's reductions: ``(mean_dy, projection, scale, grad_weight, grad_bias)``. The
    first three are float32 per-channel factors of the input gradient,
    ``(dy - mean_dy - (x - mean) * projection) * scale``; the weight and bias gradients are in the
    weight's dtype (``None`` without a weight). ``layout``: as for :func:`channel_statistics`.

    With ``gate`` (laid out as ``x``), the gradient reduced is ``where(gate <= threshold, 0, dy)``:
    the backward of the ReLU after this batch norm, folded in so that its result is never written
    (the input gradient's graph ops compute it again, inside their own kernel)."""
    rows, channels, rows_per_split, splits = layout[:4]
    affine = weight is not None
    gated = gate is not None

    def launches() -> tuple[torch.Tensor, ...]:
        key = ("gradient", layout, dy.dtype, x.dtype, affine and weight.dtype, gated and gate.dtype, x.device.index)
        kernel = _bound(_gradient_kernel, layout, {"AFFINE": affine, "GATED": gated}, key, _GRADIENT_INPUTS)
        counters, partials = _scratch(kernel.grid[0], 2 * splits * channels, x.device)
        if affine and weight.dtype == torch.float32:  # the factors and both gradients: one allocation
            results = _rows(5, channels, torch.float32, x.device).unbind(0)
        elif affine:
            results = (_rows(3, channels, torch.float32, x.device).unbind(0)
                       + _rows(2, channels, weight.dtype, x.device).unbind(0))
        else:
            results = _rows(3, channels, torch.float32, x.device).unbind(0) + (None, None)
        mean_dy, projection, scale, grad_weight, grad_bias = results
        kernel(dy, x, mean, partials, counters, invstd, weight if affine else invstd, mean_dy, projection, scale,
               grad_weight if affine else scale, grad_bias if affine else scale, gate if gated else dy,
               float(threshold), rows, channels, rows_per_split, splits)
        return results

    def fallback() -> tuple[torch.Tensor, ...]:
        dims = _reduced_dims(x)
        dy32 = dy.float()
        if gated:
            dy32 = torch.where(gate <= threshold, 0.0, dy32)
        shape = [1, channels] + [1] * (x.dim() - 2)
        sum_dy = dy32.sum(dims)
        sum_dy_xmu = (dy32 * (x.float() - mean.view(shape))).sum(dims)
        scale = invstd * weight.float() if affine else invstd
        factors = (sum_dy / rows, sum_dy_xmu / rows * invstd * invstd, scale)
        grads = ((sum_dy_xmu * invstd).to(weight.dtype), sum_dy.to(weight.dtype)) if affine else (None, None)
        return factors + grads

    return _launch_or_fall_back(_GRADIENT_KERNELS, launches, fallback, dy, x, *((gate,) if gated else ()))


_STATISTICS_KERNELS = (_statistics_kernel,) if triton is not None else ()
_GRADIENT_KERNELS = (_gradient_kernel,) if triton is not None else ()
