"""How values live inside a generated kernel: operands, dtypes, casts, literals and stores.

Every value is held in its *compute dtype*: float16 and bfloat16 are computed in float32 (ATen's
opmath) and cast back on store; other dtypes are kept as they are. The op table
(``kernels/op_table.py``) builds its expressions from these helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


class Unsupported(Exception):
    """This node (dtype, argument) is not reproduced exactly by the table: keep it in ATen."""


@dataclass(frozen=True)
class Operand:
    """A tensor operand inside a kernel: a Triton expression in the compute dtype of ``dtype``.
    ``zero_dim``: the op reads a 0-d tensor, which ranks below dimensioned tensors of its dtype
    category in type promotion (``minimum(uint8 tensor, int32 0-d)`` computes in uint8)."""

    expr: str
    dtype: torch.dtype
    zero_dim: bool = False


@dataclass(frozen=True)
class SizeScalar(Operand):
    """A symbolic int (a size under dynamic shapes: ``x / x.shape[-1]``, the max pool's window
    offsets over a dynamic width) as an operand: an int64 scalar computed from a kernel argument.
    It promotes as a Python int does (``promotion.promotion``); ``positive`` where it is provably
    at least 1, so that integer division by it cannot divide by zero."""

    positive: bool = False


TRITON_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "tl.float32",
    torch.float16: "tl.float16",
    torch.bfloat16: "tl.bfloat16",
    torch.int64: "tl.int64",
    torch.int32: "tl.int32",
    torch.int16: "tl.int16",
    torch.int8: "tl.int8",
    torch.uint8: "tl.uint8",
    torch.bool: "tl.int1",
    torch.float64: "tl.float64",
}
# Kernels compute and store these. float64 is only read, by a cast to float32 straight after the
# load (``op_table._convert``): under ``dynamic=True`` Dynamo passes a module's float attributes
# (a norm's eps, an attention scale) as float64 0-d inputs that the graph casts to float32.
FUSIBLE_DTYPES = frozenset(TRITON_DTYPES) - {torch.float64}
LOW_PRECISION = (torch.float16, torch.bfloat16)


def to_storage(expr: str, dtype: torch.dtype) -> str:
    """A compute-dtype expression converted to ``dtype`` for a store (or an explicit cast).
    bfloat16 goes through ``tmath.to_bf16``: Triton's interpreter truncates float32 → bfloat16,
    where the GPU (and ATen) round to nearest even."""
    if dtype == torch.bfloat16:
        return f"tmath.to_bf16({expr})"
    if dtype == torch.float16:
        return f"({expr}).to(tl.float16)"
    if dtype == torch.bool:
        return f"({expr}).to(tl.int1)"
    return expr if compute_dtype(dtype) == dtype else f"({expr}).to({triton_type(dtype)})"


def round_to(expr: str, dtype: torch.dtype) -> str:
    """A float32 value rounded to half precision ``dtype`` and back: eager rounds every op's
    result, and a later comparison (amax's backward: ``x == max``) depends on that rounding."""
    if dtype not in LOW_PRECISION:
        return expr
    return f"({to_storage(expr, dtype)}).to(tl.float32)"


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in LOW_PRECISION else dtype


def triton_type(dtype: torch.dtype) -> str:
    if dtype not in TRITON_DTYPES:
        raise Unsupported(f"dtype {dtype} is not fused")
    return TRITON_DTYPES[dtype]


def cast(value: Any, to: torch.dtype) -> str:
    """Operand or Python scalar → expression in the compute dtype of ``to`` (ATen cast rules)."""
    target = compute_dtype(to)
    if isinstance(value, Operand):
        source = compute_dtype(value.dtype)
        if source == target:
            return value.expr
        if target == torch.bool:
            return f"({value.expr} != 0)"
        return f"{value.expr}.to({triton_type(target)})"
    return literal(value, target)


def literal(value: Any, dtype: torch.dtype) -> str:
    """A Python scalar as a Triton expression of the compute dtype of ``dtype``."""
    dtype = compute_dtype(dtype)
    if dtype == torch.bool:
        return "1" if bool(value) else "0"
    if dtype.is_floating_point:
        value = float(value)
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        return repr(value)
    if isinstance(value, float) and not value.is_integer():
        raise Unsupported(f"non-integral scalar {value!r} for {dtype}")
    info = torch.iinfo(dtype)
    value = int(value)
    if not info.min <= value <= info.max:
        raise Unsupported(f"scalar {value} does not fit {dtype}")
    return f"tl.full([], {value}, {triton_type(dtype)})"
