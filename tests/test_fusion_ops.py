"""Every op of the op table, differentially against eager (forward, and gradients where defined),
through generated Triton kernels (``TRITON_INTERPRET=1`` on CPU; real kernels on CUDA)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.kernels import op_table
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
pytestmark = [pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)"), pytest.mark.usefixtures("generated_kernels_must_not_fail")]


def _fused(op_name: str) -> None:
    """The op ran inside a generated kernel in the first (forward) graph, not through ATen."""
    forward = metrics.compiled_graphs[0]
    assert forward.fallback_reason is None, forward.fallback_reason
    assert forward.kernels, f"no kernel generated; refused: {forward.refused}"
    assert any(op.startswith(op_name) for op in forward.fused_ops), (op_name, forward.fused_ops, forward.refused)


def _x(dtype, shape=(7, 13), low=None):
    x = torch.randn(shape, device=DEVICE).to(dtype)
    if low is not None:
        x = x.abs() + low
    return x.requires_grad_(dtype.is_floating_point)


# name → (function, positive-domain offset or None, aten op that must be fused)
UNARY = {
    "neg": (torch.neg, None, "aten.neg"),
    "reciprocal": (torch.reciprocal, 0.5, "aten.reciprocal"),
    "abs": (torch.abs, None, "aten.abs"),
    "sign": (lambda x: torch.sign(x) * x, None, "aten.sign"),
    "exp": (torch.exp, None, "aten.exp"),
    "exp2": (torch.exp2, None, "aten.exp2"),
    "log": (torch.log, 0.1, "aten.log"),
    "log2": (torch.log2, 0.1, "aten.log2"),
    "log1p": (torch.log1p, 0.0, "aten.log1p"),
    "expm1": (torch.expm1, None, "aten.expm1"),
    "sqrt": (torch.sqrt, 0.1, "aten.sqrt"),
    "rsqrt": (torch.rsqrt, 0.1, "aten.rsqrt"),
    "sin": (torch.sin, None, "aten.sin"),
    "cos": (torch.cos, None, "aten.cos"),
    "tan": (lambda x: torch.tan(x * 0.5), None, "aten.tan"),
    "tanh": (torch.tanh, None, "aten.tanh"),
    "sigmoid": (torch.sigmoid, None, "aten.sigmoid"),
    "erf": (torch.erf, None, "aten.erf"),
    "gelu": (F.gelu, None, "aten.gelu"),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), None, "aten.gelu"),
    "relu": (torch.relu, None, "aten.relu"),
    "silu": (F.silu, None, "aten.sigmoid"),
    "softplus": (F.softplus, None, "aten.log1p"),
    "hardswish": (F.hardswish, None, "aten.clamp"),
    "hardsigmoid": (F.hardsigmoid, None, "aten.clamp"),
    "elu": (F.elu, None, "aten.expm1"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), None, "aten.where"),
    "mish": (F.mish, None, "aten.tanh"),
    "clamp": (lambda x: torch.clamp(x, -0.5, 0.7), None, "aten.clamp"),
    "clamp_min": (lambda x: torch.clamp_min(x, -0.2), None, "aten.clamp"),
    "pow_2": (lambda x: x**2, None, "aten.pow"),
    "pow_half": (lambda x: x**0.5, 0.1, "aten.pow"),
    "pow_3_3": (lambda x: x**3.3, 0.1, "aten.pow"),
    "pow_3": (lambda x: x**3, None, "aten.pow"),
    "pow_minus_1": (lambda x: x**-1, 0.1, "aten.pow"),
    "pow_minus_2": (lambda x: x**-2, 0.1, "aten.pow"),
    "pow_minus_half": (lambda x: x**-0.5, 0.1, "aten.pow"),
    "floor_mul": (lambda x: torch.floor(x * 3) + x, None, "aten.floor"),
    "ceil_trunc": (lambda x: torch.ceil(x * 3) + torch.trunc(x * 5) + x, None, "aten.ceil"),
    "cast_round_trip": (
        lambda x: x.to(torch.float16 if x.dtype != torch.float16 else torch.float32).to(x.dtype) * 2, None, "aten._to_copy"
    ),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, dtype):
    fn, low, op = UNARY[name]
    check_compiled(fn, _x(dtype, low=low))
    _fused(op)


BINARY = {
    "add_alpha": (lambda x, y: torch.add(x, y, alpha=0.5), "aten.add"),
    "sub": (lambda x, y: x - y, "aten.sub"),
    "rsub": (lambda x, y: torch.rsub(x, y, alpha=2) + torch.rsub(x, 1.5), "aten.rsub"),
    "mul": (lambda x, y: x * y, "aten.mul"),
    "div": (lambda x, y: x / (y.abs() + 0.5), "aten.div"),
    "div_floor": (lambda x, y: torch.div(x * 4, y, rounding_mode="floor"), "aten.div"),
    "div_trunc": (lambda x, y: torch.div(x * 4, y, rounding_mode="trunc"), "aten.div"),
    "remainder": (lambda x, y: torch.remainder(x * 4, y) + x, "aten.remainder"),
    "pow_tensor": (lambda x, y: torch.pow(x.abs() + 0.5, y), "aten.pow"),
    "maximum": (torch.maximum, "aten.maximum"),
    "minimum": (torch.minimum, "aten.minimum"),
    "where": (lambda x, y: torch.where(x > y, x, y * 2), "aten.where"),
    "scalar_ops": (lambda x, y: (3.5 - x) * 2 + y / 4 - 1, "aten.sub"),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast(name, dtype):
    fn, op = BINARY[name]
    # y broadcasts along the rows
    check_compiled(fn, _x(dtype), _x(dtype, shape=(13,)))
    _fused(op)


def test_comparisons_and_logical():
    def fn(x, y):
        a, b = x > y, x <= 0.5
        return (
            x == y, x != y, x < y, x >= y, a & b, torch.logical_or(a, b), torch.logical_xor(a, b),
            torch.logical_not(a), torch.logical_and(a, b), x.masked_fill(a, -1.0), torch.isnan(x / y),
        )

    x = torch.randn(5, 11, device=DEVICE)
    y = torch.randn(5, 11, device=DEVICE)
    y[0, :3] = x[0, :3]  # equal elements
    check_compiled(fn, x, y)
    _fused("aten.eq")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.int8], ids=str)
def test_integer_ops(dtype):
    def fn(i, j):
        return (
            i + j, i * 3 - j, i & j, i | j, i ^ j, ~i, torch.maximum(i, j), torch.clamp(i, 1, 9),
            i > j, (i + j).to(torch.float32) / 3, torch.where(i > 4, i, j), abs(i) if dtype != torch.uint8 else i,
        )

    low = 0 if dtype == torch.uint8 else -50
    i = torch.randint(low, 60, (6, 9), dtype=dtype, device=DEVICE)
    j = torch.randint(low, 60, (6, 9), dtype=dtype, device=DEVICE)
    check_compiled(fn, i, j)
    _fused("aten.add")


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8], ids=str)
def test_integer_floor_division_by_a_nonzero_constant_is_fused(dtype):
    """Python's floor on negative values, and a negative divisor; a tensor divisor (which could
    be zero, where ATen raises) stays in ATen."""
    def fn(i, j):
        return torch.div(i, 7, rounding_mode="floor") + 1, torch.div(i, -3, rounding_mode="floor") * 2, \
            torch.div(i, j, rounding_mode="floor")

    i = torch.randint(-50, 60, (6, 9), dtype=dtype, device=DEVICE)
    i[0, :4] = torch.tensor([-7, -14, 7, 0], dtype=dtype)  # exact multiples: no correction
    j = torch.randint(1, 9, (6, 9), dtype=dtype, device=DEVICE)
    metrics.reset()
    check_compiled(fn, i, j, backward=False)
    graph = metrics.compiled_graphs[-1]
    assert graph.fused_ops.count("aten.div.Tensor_mode") == 2, graph.fused_ops
    assert graph.externs.count("aten.div.Tensor_mode") == 1, graph.externs


def test_casts():
    def fn(x, i, b):
        # float → int8 only in range: out-of-range conversion is undefined behaviour in C++ and PTX alike
        return x.to(torch.int32), i.to(torch.float16), b.to(torch.float32) + x, x.to(torch.bool), i.to(torch.bool), (x * 10).clamp(-120, 120).to(torch.int8)

    x = torch.randn(4, 10, device=DEVICE) * 3
    x[0, 0] = 0.0
    i = torch.randint(-3, 3, (4, 10), dtype=torch.int64, device=DEVICE)
    b = torch.rand(4, 10, device=DEVICE) > 0.5
    check_compiled(fn, x, i, b)
    _fused("aten._to_copy")


def test_nan_propagation():
    def fn(x, y):
        return (
            torch.maximum(x, y), torch.minimum(x, y), torch.clamp(x, -0.5, 0.5), torch.relu(x),
            x.amax(-1), x.amin(0), torch.sign(x),
        )

    x = torch.randn(6, 9, device=DEVICE)
    y = torch.randn(6, 9, device=DEVICE)
    x[1, 2] = float("nan")
    y[3, 4] = float("nan")
    x[2, 5] = float("inf")
    check_compiled(fn, x, y, backward=False)
    _fused("aten.maximum")


def test_full_and_scalar_tensor():
    def fn(x):
        return x + torch.full((7, 13), 2.5, device=x.device), torch.ones_like(x) * x, torch.zeros(7, 13, device=x.device) - x

    check_compiled(fn, _x(torch.float32))
    _fused("aten.add")


def test_ops_classes():
    aten = torch.ops.aten
    assert op_table.is_fusible(aten.add.Tensor) and op_table.is_fusible(aten.sum.dim_IntList)
    assert op_table.is_fusible(aten.permute.default)
    assert not op_table.is_fusible(aten.mm.default)
    assert op_table.op_class(aten.mm.default) is op_table.OpClass.COMPUTE_INTENSIVE
    assert op_table.op_class(aten.native_dropout.default) is op_table.OpClass.RANDOM
    assert op_table.op_class(aten.amax.default) is op_table.OpClass.REDUCTION


def test_arange_iota():
    def fn(x):
        positions = torch.arange(x.shape[-1], device=x.device)
        odd = torch.arange(3, 3 + 2 * x.shape[-1], 2, device=x.device, dtype=torch.int32)
        return x * positions, (positions * 3 + odd) % 7, x + torch.arange(x.shape[0], device=x.device)[:, None]

    # symbolic sizes: with static ones the aranges are constants, folded at compile time
    check_compiled(fn, _x(torch.float32), dynamic=True)
    _fused("aten.arange")


def test_a_one_element_arange_is_a_kernel_value():
    # its index is the constant 0, a Python int in the kernel (``(0).to(tl.int64)`` failed)
    def fn(x):
        index = torch.arange(0, x.shape[0], 2, device=x.device)
        return x.index_fill(0, index, 0.5) * 2

    check_compiled(fn, _x(torch.float32, shape=(1,)))
    _fused("aten.arange")


def _equal_to_eager(fn, *inputs):
    torch._dynamo.reset()
    expected = fn(*inputs)
    actual = torch.compile(fn, backend="ait")(*inputs)
    for x, y in zip(actual, expected):
        assert x.dtype == y.dtype
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_a_zero_dim_operand_ranks_below_dimensioned_ones_in_promotion():
    # uint8 with an int32 or int64 0-d tensor computes in uint8: -1 becomes 255 before the
    # minimum (a mixed-dtype probe found the kernels computing in int32, then wrapping)
    def fn(small, wide, scalar):
        return torch.minimum(small, scalar), torch.maximum(scalar.long(), small), small < scalar, wide + scalar

    small = torch.tensor([[0, 30, 200, 255]], dtype=torch.uint8, device=DEVICE)
    _equal_to_eager(fn, small, torch.arange(4, dtype=torch.int16, device=DEVICE), torch.tensor(-1, dtype=torch.int32, device=DEVICE))
    _fused("aten.minimum")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_operands_of_a_half_precision_op_are_rounded_to_it_first(dtype):
    # ATen casts every tensor operand to the common dtype before computing in float32: an int64 or
    # float32 0-d tensor is rounded to half precision (259 is 260 in bfloat16)
    def fn(x, count, bound):
        return torch.remainder(count, x), x < count, x.clamp(max=bound), torch.where(x > 1, count, x)

    x = torch.tensor([[3.0, 7.0, 2.5, 100.0]], dtype=dtype, device=DEVICE)
    count = torch.tensor(4099 if dtype == torch.float16 else 259, device=DEVICE)
    _equal_to_eager(fn, x, count, torch.tensor(2.7182818, device=DEVICE))
    _fused("aten.remainder")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_truncated_division_of_half_precision_tensors_truncates_the_rounded_quotient(dtype):
    # ATen divides two half-precision tensors as their own type: 142 / 4.3125 is 32.93 in float32,
    # 33 in bfloat16 and trunc 33; by a Python scalar it divides in float32 (trunc 32)
    # float16: 1999 / 1.0078125 is 1983.50 in float32, 1984 in float16
    dividend, divisor = (142.0, 4.3125) if dtype == torch.bfloat16 else (1999.0, 1.0078125)

    def fn(a, b):
        return torch.div(a, b, rounding_mode="trunc"), torch.div(a, divisor, rounding_mode="trunc")

    a = torch.full((2, 37), dividend, dtype=dtype, device=DEVICE)
    b = torch.full((2, 37), divisor, dtype=dtype, device=DEVICE)
    _equal_to_eager(fn, a, b)
    _fused("aten.div")
