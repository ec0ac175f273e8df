"""The second kernel of a split reduction: combine its float32 partial results and cast.

A split reduction (``kernels/column_reduction.py``) writes one float32 row of partial results
per split: sums (a mean's are divided already), maxima or minima, or an any / all as 0.0 / 1.0.
Adding up sums was ATen's ``partial.sum(0)`` followed by one ``.to(dtype)`` per cast of the
group's epilogue: two or three ATen calls and allocations per split reduction with a
half-precision output. This kernel does it in one launch: it walks the splits in order (a fixed
order: the same bits on every call), rounds through the epilogue's casts as eager does, and
stores each output in its dtype. One kernel serves every output of the group (a layer_norm's
weight and bias gradients share it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ait_dynamo.kernels.column_reduction import static_splits
from ait_dynamo.kernels.triton_values import round_to, to_storage
from ait_dynamo.passes.sizes import static_int


def _cast_chain(casts: tuple[torch.dtype, ...]) -> list[torch.dtype]:
    chain = list(casts)
    while chain and chain[0] == torch.float32:  # the partial results are float32 already
        chain.pop(0)
    return chain


def finished_value(var: str, casts: tuple[torch.dtype, ...]) -> tuple[str, torch.dtype]:
    """(the expression stored, its dtype) for a float32 result ``var`` cast in turn to ``casts``
    (a bool: nonzero)."""
    chain = _cast_chain(casts)
    if not chain:
        return var, torch.float32
    for dtype in chain[:-1]:
        var = f"(({var}) != 0).to(tl.float32)" if dtype == torch.bool else round_to(var, dtype)
    return to_storage(f"({var}) != 0" if chain[-1] == torch.bool else var, chain[-1]), chain[-1]


# kind: (the accumulator's start, how a partial result joins it)
_COMBINE = {
    "sum": ("tl.zeros([XBLOCK], dtype=tl.float32)", "{acc} + {value}"),
    "mean": ("tl.zeros([XBLOCK], dtype=tl.float32)", "{acc} + {value}"),
    "max": ("tl.full([XBLOCK], float(\"-inf\"), tl.float32)", "tl.maximum({acc}, {value}, propagate_nan=tl.PropagateNan.ALL)"),
    "min": ("tl.full([XBLOCK], float(\"inf\"), tl.float32)", "tl.minimum({acc}, {value}, propagate_nan=tl.PropagateNan.ALL)"),
    "any": ("tl.zeros([XBLOCK], dtype=tl.float32)", "tl.maximum({acc}, {value})"),
    "all": ("tl.full([XBLOCK], 1.0, tl.float32)", "tl.minimum({acc}, {value})"),
}


def finishing_kernel(kernel: Any, name: str) -> Any:
    """The ``GeneratedKernel`` named ``name`` that combines ``kernel``'s partial results (``kernel.split``)."""
    from ait_dynamo.kernels.codegen import GeneratedKernel, KernelArgs
    from ait_dynamo.kernels.wrapper import render_template

    buffers = [(node, buffer) for node, buffer in kernel.out_buffers if buffer in kernel.split_casts]
    body: list[str] = []
    dtypes: list[torch.dtype] = []
    kinds = [kernel.split_kinds[buffer] for _, buffer in buffers]
    for index, kind in enumerate(kinds):
        body += [f"acc{index} = {_COMBINE[kind][0]}", f"ptr{index} = in_ptr{index} + xindex"]
    body.append("for split in range(0, ks0):")
    for index, kind in enumerate(kinds):
        joined = _COMBINE[kind][1].format(acc=f"acc{index}", value=f"tl.load(ptr{index}, xmask, other=0)")
        body += [f"    acc{index} = {joined}", f"    ptr{index} += xnumel"]
    for index, (_, buffer) in enumerate(buffers):
        value, dtype = finished_value(f"acc{index}", kernel.split_casts[buffer])
        dtypes.append(dtype)
        body.append(f"tl.store(out_ptr{index} + xindex, {value}, xmask)")
    tensor_params = [f"in_ptr{i}" for i in range(len(buffers))] + [f"out_ptr{i}" for i in range(len(buffers))]
    source = render_template("pointwise.py.jinja", name=name, tensor_params=tensor_params, int_params=["ks0"],
                             int64=False, x_index=[], body=body, ops="the split reduction's partial results, combined")
    splits = static_splits(kernel.xnumel, kernel.rnumel, kernel.column)
    xnumel = static_int(math.prod([1, *kernel.xnumel]))
    warmup = None if splits is None else (tuple([torch.float32] * len(buffers) + dtypes), (splits, xnumel))
    return GeneratedKernel(
        name=name, source=source, kind="pointwise", persistent=False, column=False, split=False,
        args=KernelArgs(tensors=[f"{b}__partial" for _, b in buffers] + [b for _, b in buffers], ints=[("splits",)]),
        xnumel=list(kernel.xnumel), rnumel=[], out_buffers=buffers, bytes_moved=None,
        device_type=kernel.device_type, warmup=warmup,
    )
