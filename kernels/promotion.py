"""How ATen's TensorIterator types an elementwise op, for the op table's emitters: the
computation and result dtypes (``promotion``), the operands as it reads them (``read_operands``:
each tensor operand cast to the common dtype first), and the cast of a computed value to the
result (``to_result``)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as Promotion
from torch._prims_common import elementwise_dtypes

from ait_dynamo.kernels.triton_values import (
    FUSIBLE_DTYPES,
    Operand,
    SizeScalar,
    Unsupported,
    cast,
    compute_dtype,
    round_to,
    triton_type,
)


def promotion(args: Sequence[Any], kind: Promotion) -> tuple[torch.dtype, torch.dtype]:
    """(computation dtype, result dtype) as ATen's TensorIterator chooses them."""
    computation, result = elementwise_dtypes(*_probes(args), type_promotion_kind=kind)
    for dtype in (computation, result):
        if dtype not in FUSIBLE_DTYPES:
            raise Unsupported(f"computes in {dtype}")
    return compute_dtype(computation), result


def _probes(args: Sequence[Any]) -> list[Any]:
    probes: list[Any] = []
    for arg in args:
        if isinstance(arg, SizeScalar):
            probes.append(0)  # a SymInt is a wrapped number: it promotes as a Python int
        elif isinstance(arg, Operand):
            probes.append(torch.empty(() if arg.zero_dim else (1,), dtype=arg.dtype, device="meta"))
        elif isinstance(arg, (bool, int, float)):
            probes.append(arg)
    return probes


def read_operands(args: Sequence[Any], kind: Promotion) -> tuple[list[Any], torch.dtype, torch.dtype]:
    """The operands as ATen's TensorIterator reads them, with the computation and result dtypes.

    TensorIterator casts each tensor operand to the common dtype before the op computes in
    opmath: an int64 or float32 operand of a bfloat16 op is rounded to bfloat16 first
    (``remainder(int64 0-d, bfloat16)``: 259 becomes 260; a probe of mixed-dtype programs found
    ait reading it straight into float32). Python scalars stay as they are (ATen passes them to
    the kernel in opmath)."""
    computation, result = promotion(args, kind)
    common = result
    if kind == Promotion.ALWAYS_BOOL:
        common = elementwise_dtypes(*_probes(args), type_promotion_kind=Promotion.NO_OPMATH)[1]
    if common not in (torch.float16, torch.bfloat16):
        return list(args), computation, result
    read = [Operand(round_to(cast(arg, computation), common), computation)
            if isinstance(arg, Operand) and not isinstance(arg, SizeScalar) and arg.dtype != common else arg
            for arg in args]
    return read, computation, result


def to_result(expr: str, computation: torch.dtype, result: torch.dtype) -> str:
    """``expr``, computed in ``computation``, as a value of the result dtype (in its compute dtype)."""
    target = compute_dtype(result)
    if target == computation:
        # integer ops may widen in Triton (int8 + int32 literal): narrow back, wrapping like ATen
        return f"({expr}).to({triton_type(target)})" if not target.is_floating_point and target != torch.bool else f"({expr})"
    return cast(Operand(f"({expr})", computation), result)
