"""The one op table: aten op → op class and, for fusible ops, its Triton expression.

The fusion planner and the partitioner both read this table; nothing else in the project writes
Triton expressions. An op missing here stays an extern (run through ATen).

Value representation inside a kernel: every value is held in its *compute dtype* — float16 and
bfloat16 are computed in float32 (ATen's opmath) and cast back on store; other dtypes are kept as
they are. An emitter gets its tensor operands as :class:`Operand` (expression + logical dtype) and
its scalar arguments as Python values, and returns an expression in the compute dtype of the node's
result. When an emitter cannot reproduce ATen exactly for the given dtypes or arguments it raises
:class:`Unsupported`, and the planner leaves the node an extern with that reason.

The value helpers (casts, literals, stores) are in ``kernels/triton_values.py``; how ATen types an
op (promotion, the operands as it reads them) in ``kernels/promotion.py``.
Float64 and complex values are not fused (the table's expressions are written for float32 opmath).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as Promotion

from ait_dynamo.kernels.promotion import promotion, read_operands, to_result
from ait_dynamo.kernels.triton_values import (
    FUSIBLE_DTYPES,
    Operand,
    SizeScalar,
    Unsupported,
    cast,
    compute_dtype,
    literal,
    round_to,
    triton_type,
)

aten = torch.ops.aten
prims = torch.ops.prims


class OpClass(enum.Enum):
    POINTWISE = "pointwise"
    REDUCTION = "reduction"
    VIEW = "view"
    RANDOM = "random"
    COMPUTE_INTENSIVE = "compute_intensive"
    OTHER = "other"


Emitter = Callable[..., str]


@dataclass(frozen=True)
class PointwiseRule:
    """``emit(*operands, **kwargs)`` → Triton expression in the compute dtype of the result."""

    emit: Emitter


def _binary(op: Callable[[str, str, torch.dtype], str], kind: Promotion = Promotion.DEFAULT,
            allow_bool: bool = False, float_only: bool = False) -> Emitter:
    def emit(a: Any, b: Any, **kwargs: Any) -> str:
        if kwargs:
            raise Unsupported(f"keyword arguments {sorted(kwargs)}")
        (a, b), computation, result = read_operands((a, b), kind)
        if computation == torch.bool and not allow_bool:
            raise Unsupported("arithmetic on bool")
        if float_only and not computation.is_floating_point:
            raise Unsupported(f"integer {computation}")
        expr = op(cast(a, computation), cast(b, computation), computation)
        return to_result(expr, computation, result)

    return emit


def _unary(op: Callable[[str, torch.dtype], str], kind: Promotion = Promotion.DEFAULT,
           float_only: bool = False, allow_bool: bool = False) -> Emitter:
    def emit(a: Any, **kwargs: Any) -> str:
        if kwargs:
            raise Unsupported(f"keyword arguments {sorted(kwargs)}")
        computation, result = promotion((a,), kind)
        if computation == torch.bool and not allow_bool:
            raise Unsupported("arithmetic on bool")
        if float_only and not computation.is_floating_point:
            raise Unsupported(f"integer {computation}")
        return to_result(op(cast(a, computation), computation), computation, result)

    return emit


def _with_alpha(sign: str) -> Emitter:
    def emit(a: Any, b: Any, alpha: Any = 1) -> str:
        (a, b), computation, result = read_operands((a, b), Promotion.DEFAULT)
        if computation == torch.bool:
            raise Unsupported("arithmetic on bool")
        if isinstance(alpha, bool) or (not computation.is_floating_point and isinstance(alpha, float)):
            raise Unsupported(f"alpha {alpha!r}")
        right = cast(b, computation)
        if alpha != 1:
            right = f"({right} * {literal(alpha, computation)})"
        return to_result(f"{cast(a, computation)} {sign} {right}", computation, result)

    return emit


def _nan_max(a: str, b: str, dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return f"tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)"
    return f"tl.maximum({a}, {b})"


def _nan_min(a: str, b: str, dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return f"tl.minimum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)"
    return f"tl.minimum({a}, {b})"


def _div_mode(a: Any, b: Any, rounding_mode: str | None = None) -> str:
    if rounding_mode is None:
        return _binary(lambda x, y, t: f"{x} / {y}", Promotion.INT_TO_FLOAT)(a, b)
    (a, b), computation, result = read_operands((a, b), Promotion.DEFAULT)
    if not computation.is_floating_point:
        # integer floor division by a nonzero constant or a size provably at least 1 cannot
        # divide by zero (ATen raises on that, so a tensor divisor stays in ATen); the max pool's
        # window offsets divide flat indices by the image width (kernels/max_pool_offsets.py)
        constant = (isinstance(b, SizeScalar) and b.positive) or (
            not isinstance(b, Operand) and isinstance(b, int) and not isinstance(b, bool) and b != 0)
        if rounding_mode != "floor" or not constant:
            raise Unsupported(f"integer division with rounding_mode={rounding_mode!r}")
        return to_result(f"_ait_int_floor_divide({cast(a, computation)}, {cast(b, computation)})", computation, result)
    x, y = cast(a, computation), cast(b, computation)
    if rounding_mode == "trunc":
        # Triton's float32 `/` is div.full (within 2 ulp): 15 / 3 can come out as 4.9999995 and
        # truncate to 4 (the H200 OpInfo sweep found it in bfloat16); eager divides exactly.
        # The floor path is safe without it: its correction step rounds a quotient near an integer.
        quotient = f"tl.div_rn({x}, {y})" if computation == torch.float32 else f"{x} / {y}"
        # ATen's CUDA kernel (and the CPU's vectorised one) divides two half-precision tensors as
        # their own type, so the quotient is rounded before it is truncated: 142 / 4.3125 is 32.93
        # in float32 and 33 in bfloat16, whose trunc is 33 (a mixed-dtype probe found ait's 32).
        # A Python scalar divisor is divided in float32 on both devices (the CPU also divides so
        # by a one-element tensor, CUDA does not: ait follows CUDA there).
        expr = f"tmath.trunc({round_to(quotient, result) if isinstance(b, Operand) else quotient})"
    elif rounding_mode == "floor":
        expr = f"_ait_floor_divide({x}, {y})"
    else:
        raise Unsupported(f"rounding_mode {rounding_mode!r}")
    return to_result(expr, computation, result)


def _remainder(a: Any, b: Any) -> str:
    (a, b), computation, result = read_operands((a, b), Promotion.DEFAULT)
    if not computation.is_floating_point:
        raise Unsupported("integer remainder (ATen raises on division by zero)")
    return to_result(f"_ait_remainder({cast(a, computation)}, {cast(b, computation)})", computation, result)


def _pow(a: Any, b: Any) -> str:
    (a, b), computation, result = read_operands((a, b), Promotion.BOOL_TO_LONG)
    if not computation.is_floating_point:
        raise Unsupported("integer pow")
    if not isinstance(b, Operand) and float(b) == 2.0:
        x = cast(a, computation)
        return to_result(f"{x} * {x}", computation, result)
    if not isinstance(b, Operand) and float(b) == 0.5:
        return to_result(f"tl.sqrt_rn({cast(a, computation)})", computation, result)
    # ATen's CUDA pow with these scalar exponents multiplies instead of calling pow. With
    # libdevice pow (and 1 / sqrt_rn for rsqrt) the pointwise chain's fwd+bwd at 8192^2 fp32 took
    # 0.997 ms on the H200, and 0.786 ms with these forms (fusion_bench at d67606f and 9126ac6).
    special = {3.0: "{x} * {x} * {x}", -0.5: "tl.math.rsqrt({x})", -1.0: "1.0 / {x}", -2.0: "1.0 / ({x} * {x})"}
    if not isinstance(b, Operand) and float(b) in special:
        return to_result(special[float(b)].format(x=cast(a, computation)), computation, result)
    base = cast(a, computation) if isinstance(a, Operand) else f"tl.full([], {literal(a, computation)}, tl.float32)"
    exponent = cast(b, computation) if isinstance(b, Operand) else f"tl.full([], {literal(b, computation)}, tl.float32)"
    return to_result(f"tmath.pow({base}, {exponent})", computation, result)


def _where(condition: Any, a: Any, b: Any) -> str:
    if not isinstance(condition, Operand) or condition.dtype != torch.bool:
        raise Unsupported("where needs a bool tensor condition")
    (a, b), computation, result = read_operands((a, b), Promotion.NO_OPMATH)
    return to_result(f"tl.where({condition.expr}, {cast(a, computation)}, {cast(b, computation)})", computation, result)


def _masked_fill(a: Any, mask: Any, value: Any) -> str:
    if not isinstance(mask, Operand) or mask.dtype != torch.bool or not isinstance(a, Operand):
        raise Unsupported("masked_fill needs a bool tensor mask")
    if isinstance(value, Operand):
        raise Unsupported("masked_fill with a tensor value")
    target = compute_dtype(a.dtype)
    if target == torch.bool:
        raise Unsupported("masked_fill of bool")
    return f"tl.where({mask.expr}, {literal(value, target)}, {a.expr})"


def _clamp(a: Any, min: Any = None, max: Any = None) -> str:  # noqa: A002 - ATen's names
    """clamp with scalar or tensor bounds: min(max(a, min), max), a NaN anywhere propagating (as
    ATen's kernels for both); T5's float16 clamp takes its bounds as 0-d tensors."""
    if not isinstance(a, Operand):
        raise Unsupported("clamp of a scalar")
    given = {name: v for name, v in (("a", a), ("min", min), ("max", max)) if v is not None}
    read, computation, result = read_operands(list(given.values()), Promotion.DEFAULT)
    values = dict(zip(given, read))
    if computation == torch.bool:
        raise Unsupported("clamp of bool")
    expr = cast(values["a"], computation)
    if "min" in values:
        expr = _nan_max(expr, cast(values["min"], computation), computation)
    if "max" in values:
        expr = _nan_min(expr, cast(values["max"], computation), computation)
    return to_result(expr, computation, result)


def _isinf(a: Any) -> str:
    if not isinstance(a, Operand):
        raise Unsupported("isinf of a scalar")
    if not compute_dtype(a.dtype).is_floating_point:
        return f"({a.expr} != {a.expr})"  # never infinite, in the operand's shape
    return f"(tl.abs({a.expr}) == float(\"inf\"))"


def _convert(a: Any, dtype: torch.dtype) -> str:
    if not isinstance(a, Operand):
        raise Unsupported("convert of a scalar")
    if dtype not in FUSIBLE_DTYPES:
        raise Unsupported(f"cast to {dtype}")
    if a.dtype == torch.float64 and dtype != torch.float32:
        # one rounding, as ATen's: to half precision through float32 would round twice
        raise Unsupported(f"cast of float64 to {dtype}")
    # an explicit cast to half precision rounds, as in eager
    return round_to(cast(a, dtype), dtype) if a.dtype != dtype else cast(a, dtype)


def _to_copy(a: Any, dtype: torch.dtype | None = None, layout: Any = None, device: Any = None,
             pin_memory: Any = None, non_blocking: bool = False, memory_format: Any = None) -> str:
    # the planner checks that the result stays on its input's device
    if layout not in (None, torch.strided) or pin_memory:
        raise Unsupported("_to_copy that changes layout or pins memory")
    if not isinstance(a, Operand):
        raise Unsupported("_to_copy of a scalar")
    return _convert(a, dtype or a.dtype)


def _clone(a: Any, memory_format: Any = None) -> str:
    if not isinstance(a, Operand):
        raise Unsupported("clone of a scalar")
    return a.expr


def _gelu(a: Any, approximate: str = "none") -> str:
    computation, result = promotion((a,), Promotion.DEFAULT)
    if not computation.is_floating_point:
        raise Unsupported("gelu of integers")
    x = cast(a, computation)
    if approximate == "none":
        expr = f"0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))"
    elif approximate == "tanh":
        expr = f"0.5 * {x} * (1.0 + tmath.tanh(0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})))"
    else:
        raise Unsupported(f"gelu approximate={approximate!r}")
    return to_result(expr, computation, result)


def _full(size: Any, fill_value: Any, dtype: torch.dtype | None = None, layout: Any = None,
          device: Any = None, pin_memory: Any = None) -> str:
    if dtype is None or dtype not in FUSIBLE_DTYPES or isinstance(fill_value, Operand):
        raise Unsupported("full without an explicit fusible dtype")
    return literal(fill_value, dtype)


def _scalar_tensor(value: Any, dtype: torch.dtype | None = None, layout: Any = None,
                   device: Any = None, pin_memory: Any = None) -> str:
    return _full([], value, dtype=dtype)


def _relu(a: Any) -> str:
    computation, result = promotion((a,), Promotion.DEFAULT)
    if computation == torch.bool:
        raise Unsupported("relu of bool")
    return to_result(_nan_max(cast(a, computation), literal(0, computation), computation), computation, result)


def _sign(x: str, t: torch.dtype) -> str:
    if t == torch.bool:
        return x
    return f"(({x} > 0).to({triton_type(t)}) - ({x} < 0).to({triton_type(t)}))"


def _logical(op: str) -> Emitter:
    def emit(a: Any, b: Any) -> str:
        return f"(({cast(a, torch.bool)}) {op} ({cast(b, torch.bool)}))"

    return emit


def _bitwise(op: str) -> Emitter:
    def emit(a: Any, b: Any) -> str:
        computation, result = promotion((a, b), Promotion.DEFAULT)
        if computation.is_floating_point:
            raise Unsupported("bitwise op on floats")
        return to_result(f"{cast(a, computation)} {op} {cast(b, computation)}", computation, result)

    return emit


def _bitwise_not(a: Any) -> str:
    if not isinstance(a, Operand) or a.dtype.is_floating_point:
        raise Unsupported("bitwise_not of floats")
    if a.dtype == torch.bool:
        return f"({a.expr} == 0)"
    if not a.dtype.is_signed:
        # XOR with all ones of the same type: Triton 3.8's interpreter implements ``~`` on unsigned
        # values as ``^ -1``, which numpy refuses for them (OverflowError, seen 2026-12-05).
        ones = (1 << (8 * a.dtype.itemsize)) - 1
        return f"({a.expr} ^ tl.full([], {ones}, {triton_type(a.dtype)}))"
    return f"(~{a.expr})"


def _compare(op: str) -> Emitter:
    return _binary(lambda x, y, t: f"{x} {op} {y}", Promotion.ALWAYS_BOOL, allow_bool=True)


_FLOAT = Promotion.INT_TO_FLOAT


def _float_unary(template: str) -> Emitter:
    return _unary(lambda x, t: template.format(x=x), _FLOAT, float_only=True)


# Triton helpers the expressions above call; every generated kernel module defines them.
HELPERS_SOURCE = '''
@triton.jit
def _ait_floor_divide(a, b):
    # ATen's div_floor_floating: exact floor of a / b, including the sign of zero
    mod = a % b
    div = (a - mod) / b
    div = tl.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1.0, div)
    floor_div = tl.floor(div)
    floor_div = tl.where(div - floor_div > 0.5, floor_div + 1.0, floor_div)
    floor_div = tl.where(div == 0, 0.0 * (a / b), floor_div)
    return tl.where(b == 0, a / b, floor_div)


@triton.jit
def _ait_int_floor_divide(a, b):
    # Triton's integer // and % truncate toward zero, as C does; Python's and ATen's floor
    quotient = a // b
    remainder = a % b
    return tl.where((remainder != 0) & ((remainder < 0) != (b < 0)), quotient - 1, quotient)


@triton.jit
def _ait_multiply(a, b):
    return a * b


@triton.jit
def _ait_remainder(a, b):
    # Python's modulo: the result has the sign of the divisor
    mod = a % b
    return tl.where((mod != 0) & ((b < 0) != (mod < 0)), mod + b, mod)
'''


POINTWISE: dict[Any, PointwiseRule] = {}


def _register(ops: Sequence[Any], emit: Emitter) -> None:
    for op in ops:
        POINTWISE[op] = PointwiseRule(emit)


_register([aten.add.Tensor, aten.add.Scalar], _with_alpha("+"))
_register([aten.sub.Tensor, aten.sub.Scalar], _with_alpha("-"))
_register([aten.rsub.Tensor, aten.rsub.Scalar], lambda a, b, alpha=1: _with_alpha("-")(b, a, alpha=alpha))
_register([aten.mul.Tensor, aten.mul.Scalar], _binary(lambda x, y, t: f"{x} * {y}"))
_register([aten.div.Tensor, aten.div.Scalar], _binary(lambda x, y, t: f"{x} / {y}", _FLOAT))
_register([aten.div.Tensor_mode, aten.div.Scalar_mode], _div_mode)
_register([aten.remainder.Tensor, aten.remainder.Scalar], _remainder)
_register([aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar], _pow)
_register([aten.neg.default], _unary(lambda x, t: f"-{x}"))
_register([aten.reciprocal.default], _float_unary("1.0 / {x}"))
_register([aten.abs.default], _unary(lambda x, t: f"tl.abs({x})"))
_register([aten.sign.default], _unary(_sign, allow_bool=True))
_register([aten.maximum.default], _binary(_nan_max))
_register([aten.minimum.default], _binary(_nan_min))
_register([aten.clamp.default, aten.clamp.Tensor], _clamp)
_register([aten.clamp_min.default, aten.clamp_min.Tensor], lambda a, min: _clamp(a, min=min))
_register([aten.clamp_max.default, aten.clamp_max.Tensor], lambda a, max: _clamp(a, max=max))
_register([aten.relu.default], _relu)
for _name, _op in [("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")]:
    _packet = getattr(aten, _name)
    _register([_packet.Tensor, _packet.Scalar], _compare(_op))
_register([aten.logical_and.default], _logical("&"))
_register([aten.logical_or.default], _logical("|"))
_register([aten.logical_xor.default], _logical("^"))
_register([aten.logical_not.default], lambda a: f"({cast(a, torch.bool)} == 0)")
_register([aten.bitwise_and.Tensor, aten.bitwise_and.Scalar], _bitwise("&"))
_register([aten.bitwise_or.Tensor, aten.bitwise_or.Scalar], _bitwise("|"))
_register([aten.bitwise_xor.Tensor, aten.bitwise_xor.Scalar], _bitwise("^"))
_register([aten.bitwise_not.default], _bitwise_not)
_register([aten.where.self], _where)
_register([aten.masked_fill.Scalar], _masked_fill)
_register([aten.isinf.default], _isinf)
_register([aten.isnan.default], lambda a: f"({a.expr} != {a.expr})" if isinstance(a, Operand) else "0")
_register([aten.exp.default], _float_unary("tl.exp({x})"))
_register([aten.exp2.default], _float_unary("tl.exp2({x})"))
_register([aten.log.default], _float_unary("tl.log({x})"))
_register([aten.log2.default], _float_unary("tl.log2({x})"))
_register([aten.log1p.default], _float_unary("tmath.log1p({x})"))
_register([aten.expm1.default], _float_unary("tmath.expm1({x})"))
_register([aten.sqrt.default], _float_unary("tl.sqrt_rn({x})"))
# ATen's CUDA rsqrt is the hardware approximation (rsqrtf), not 1 / sqrt: as here
_register([aten.rsqrt.default], _float_unary("tl.math.rsqrt({x})"))
_register([aten.sin.default], _float_unary("tl.sin({x})"))
_register([aten.cos.default], _float_unary("tl.cos({x})"))
_register([aten.tan.default], _float_unary("tmath.tan({x})"))
_register([aten.tanh.default], _float_unary("tmath.tanh({x})"))
_register([aten.sigmoid.default], _float_unary("(1.0 / (1.0 + tl.exp(-{x})))"))
_register([aten.erf.default], _float_unary("tl.erf({x})"))
_register([aten.floor.default], _unary(lambda x, t: f"tl.floor({x})" if t.is_floating_point else x))
_register([aten.ceil.default], _unary(lambda x, t: f"tl.ceil({x})" if t.is_floating_point else x))
_register([aten.trunc.default], _unary(lambda x, t: f"tmath.trunc({x})" if t.is_floating_point else x))
_register([aten.gelu.default], _gelu)
_register([prims.convert_element_type.default], _convert)
_register([aten._to_copy.default], _to_copy)
_register([aten.clone.default], _clone)
_register([aten.full.default], _full)
_register([aten.scalar_tensor.default], _scalar_tensor)


# ---------------------------------------------------------------------------- random numbers

# Uniform [0, 1) random tensors, generated in the kernel with Triton's Philox (``tl.rand``).
# Seed/offset scheme: every call of the compiled graph draws one 31-bit seed per random node from
# torch's default CPU generator (so ``torch.manual_seed`` makes runs reproducible and each call
# differs); the Philox counter (offset) is the element's linear index in the random tensor. Values
# follow the same distribution as eager's, not eager's exact stream.
RANDOM_UNIFORM = frozenset({aten.rand_like.default, aten.rand.default})
_BELOW_ONE = {torch.float16: 1.0 - 2.0**-11, torch.bfloat16: 1.0 - 2.0**-9}


def uniform(seed: str, offset: str, dtype: torch.dtype) -> str:
    """Expression of a uniform [0, 1) value of ``dtype`` (computed in float32)."""
    expr = f"tl.rand({seed}, {offset})"
    if dtype in _BELOW_ONE:  # rounding to half precision must not reach 1.0
        expr = f"tl.minimum({expr}, {_BELOW_ONE[dtype]!r})"
    return expr


# ---------------------------------------------------------------------------- iota

# arange: element i is start + i * step, exact for integer dtypes (float aranges stay in ATen:
# ATen accumulates them in a wider type).
IOTA = frozenset({aten.arange.default, aten.arange.start, aten.arange.start_step})


def iota_arguments(target: Any, args: Sequence[Any]) -> tuple[Any, Any]:
    """(start, step) of an arange call."""
    if target is aten.arange.default:
        return 0, 1
    if target is aten.arange.start:
        return args[0], 1
    return args[0], (args[2] if len(args) > 2 else 1)


def iota(index: str, start: int, step: int, dtype: torch.dtype) -> str:
    # A one-element arange's index is a constant ("0"): a Python int, which has no ``.to``.
    constant = index.strip().isdigit()
    expr = f"tl.full([], {index.strip()}, tl.int64)" if constant else f"({index}).to(tl.int64)"
    if step != 1:
        expr = f"{expr} * {literal(step, torch.int64)}"
    if start != 0:
        expr = f"{expr} + {literal(start, torch.int64)}"
    return expr if dtype == torch.int64 else f"({expr}).to({triton_type(dtype)})"


# ---------------------------------------------------------------------------- other classes

# Reductions the kernel templates implement; value = the combine name the codegen uses.
REDUCTIONS: dict[Any, str] = {
    aten.sum.dim_IntList: "sum",
    aten.sum.default: "sum",
    aten.mean.dim: "mean",
    aten.mean.default: "mean",
    aten.amax.default: "max",
    aten.amin.default: "min",
    aten.prod.dim_int: "prod",
    aten.prod.default: "prod",
    aten.any.dim: "any",
    aten.any.default: "any",
    aten.all.dim: "all",
    aten.all.default: "all",
    **{getattr(aten, name).dims: name for name in ("any", "all") if "dims" in getattr(aten, name).overloads()},
}

# Element-type conversions: a split column reduction applies them after adding its partial sums.
CASTS = frozenset({aten._to_copy.default, prims.convert_element_type.default})

# View ops the planner folds into index arithmetic (no data is moved).
VIEWS = frozenset({
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.expand.default,
    aten.permute.default,
    aten.transpose.int,
    aten.t.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.slice.Tensor,
    aten.alias.default,
})

COMPUTE_INTENSIVE = frozenset({
    aten.mm.default,
    aten.addmm.default,
    aten.bmm.default,
    aten.baddbmm.default,
    aten.convolution.default,
    aten.convolution_backward.default,
    aten._scaled_dot_product_efficient_attention.default,
    aten._scaled_dot_product_flash_attention.default,
    aten._scaled_dot_product_cudnn_attention.default,
})


def op_class(target: Any) -> OpClass:
    """The class of an aten op: what the partitioner may recompute, what the planner may fuse."""
    if target in POINTWISE:
        return OpClass.POINTWISE
    if target in REDUCTIONS:
        return OpClass.REDUCTION
    if target in VIEWS:
        return OpClass.VIEW
    if target in COMPUTE_INTENSIVE:
        return OpClass.COMPUTE_INTENSIVE
    if target in RANDOM_UNIFORM:
        return OpClass.RANDOM
    if target in IOTA:
        return OpClass.POINTWISE
    if isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded in target.tags:
        return OpClass.RANDOM
    return OpClass.OTHER


def is_fusible(target: Any) -> bool:
    """True if generated kernels can compute ``target`` (pointwise, reduction, foldable view, or a
    uniform random tensor). A random op is fusible but must never be recomputed.

    Dtypes and arguments are checked per node when the planner emits it; a node the table cannot
    reproduce exactly still stays an extern."""
    return op_class(target) in (OpClass.POINTWISE, OpClass.REDUCTION, OpClass.VIEW) or target in RANDOM_UNIFORM
