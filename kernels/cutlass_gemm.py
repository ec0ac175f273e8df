"""CUTLASS GEMMs with a fused epilogue (issue 14): what one kernel computes, its source, its call.

A kernel (``templates/cutlass_gemm.cu.jinja``) computes, over L batches of an M x N x K product,

    out = act(alpha * (a @ b) + beta * residual + bias)      [pre = the value before act]

with ``bias`` a vector of N elements (``nn.Linear``'s), ``residual`` an [L,] M x N tensor and ``pre``
a second output where a backward saves the pre-activation. :class:`Spec` fixes what a kernel
specialises on (dtype, the operands' memory orders, the epilogue, the tile); :func:`refusal` says
why a problem cannot take CUTLASS (TMA needs 16-byte aligned rows, the epilogue's vectors likewise).

Graphs call the kernels through two custom ops, ``ait::cutlass_gemm`` and ``ait::cutlass_gemm_pre``
(``passes/cutlass_gemm.py`` puts them there), whose argument ``library`` names the built kernel. A
call that CUTLASS refuses at run time (an operand whose address is not 16-byte aligned, which
shapes checked at compile time do not rule out) computes the same value with ATen instead, with
one warning.
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

from ait_dynamo.kernels import cutlass_build, runtime, source

ELEMENTS = {torch.float16: "cutlass::half_t", torch.bfloat16: "cutlass::bfloat16_t", torch.float32: "float"}
# op name (passes/cutlass_gemm.py) → cutlass::epilogue::thread functor
ACTIVATIONS = {"identity": "Identity", "relu": "ReLu", "gelu": "GELU", "gelu_tanh": "GELU_taylor",
               "silu": "SiLu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
_LAYOUT = {"row": "cutlass::layout::RowMajor", "col": "cutlass::layout::ColumnMajor"}

# (tile M, N, K), (cluster M, N), schedule: the candidates measured for each problem. 128x256 with
# the cooperative schedule and a 2-CTA cluster is CUTLASS's usual best large bf16 / fp16 tile on
# Hopper; 128x128 ping-pong overlaps one warp group's epilogue with the other's mainloop, which
# pays where the epilogue is heavy or K short; 64x128 keeps more SMs busy on small problems.
# float32 (TF32 wgmma) halves the K tile: its elements take twice the shared memory.
CONFIGS: tuple[tuple[tuple[int, int, int], tuple[int, int], str], ...] = (
    ((128, 256, 64), (1, 2), "Cooperative"),
    ((128, 128, 64), (1, 1), "Pingpong"),
    ((128, 128, 64), (2, 1), "Cooperative"),
    ((64, 128, 64), (1, 1), "Pingpong"),
)


@dataclass(frozen=True)
class Spec:
    dtype: torch.dtype
    a_layout: str  # "row": K contiguous; "col": M contiguous
    b_layout: str  # "row": N contiguous; "col": K contiguous (nn.Linear's transposed weight)
    activation: str
    residual: bool
    pre: bool
    tile: tuple[int, int, int]
    cluster: tuple[int, int]
    schedule: str

    def source(self) -> str:
        from ait_dynamo.kernels.wrapper import render_template

        tile = self.tile if self.dtype != torch.float32 else (self.tile[0], self.tile[1], self.tile[2] // 2)
        return render_template(
            "cutlass_gemm.cu.jinja", name=self.name(), element=ELEMENTS[self.dtype], a_layout=_LAYOUT[self.a_layout],
            b_layout=_LAYOUT[self.b_layout], activation=ACTIVATIONS[self.activation], source=self.residual,
            aux=self.pre, tile=tile, cluster=self.cluster, schedule=self.schedule)

    def name(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        parts = [dtype, self.a_layout + self.b_layout, self.activation, "res" if self.residual else "",
                 "pre" if self.pre else "", "x".join(map(str, self.tile)), "x".join(map(str, self.cluster)),
                 self.schedule.lower()]
        return "_".join(p for p in parts if p)


def specs(dtype: torch.dtype, a_layout: str, b_layout: str, activation: str, residual: bool, pre: bool) -> list[Spec]:
    return [Spec(dtype, a_layout, b_layout, activation, residual, pre, tile, cluster, schedule)
            for tile, cluster, schedule in CONFIGS]


def _alignment(dtype: torch.dtype) -> int:
    return 16 // torch.empty((), dtype=dtype).element_size()


def operand_layout(value: torch.Tensor) -> tuple[str, int] | None:
    """(CUTLASS layout, leading dimension) of a matrix (or batch of them) over its last two dims:
    "row" (RowMajor) where its columns are contiguous, "col" (ColumnMajor) where its rows are;
    None if neither is. For B (K x N) "col" is K contiguous: ``nn.Linear``'s transposed weight."""
    rows, columns = value.shape[-2], value.shape[-1]
    if value.stride(-1) == 1 or columns == 1:
        return "row", max(int(value.stride(-2)), int(columns))
    if value.stride(-2) == 1 or rows == 1:
        return "col", max(int(value.stride(-1)), int(rows))
    return None


def refusal(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
            out_dtype: torch.dtype) -> str | None:
    """Why CUTLASS cannot compute ``a @ b`` (+ epilogue) as these (meta) values are laid out, or
    None. TMA loads and stores rows whose starts are 16-byte aligned: each operand's leading
    dimension, and the extent of its contiguous dim, a multiple of 16 bytes."""
    if out_dtype not in ELEMENTS or any(t.dtype != out_dtype for t in (a, b, bias, residual) if t is not None):
        return f"dtype {out_dtype} (CUTLASS takes fp16, bf16, or fp32 as TF32, one dtype for all)"
    if out_dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "float32 with allow_tf32 off (CUTLASS computes float32 GEMMs in TF32)"
    if a.dim() != b.dim() or a.dim() not in (2, 3) or (a.dim() == 3 and a.shape[0] != b.shape[0]):
        return "not a 2-d or batched 3-d product"
    align = _alignment(out_dtype)
    m, k, n = int(a.shape[-2]), int(a.shape[-1]), int(b.shape[-1])
    if min(m, n, k) == 0:
        return "an empty dim"
    layouts = (operand_layout(a), operand_layout(b))
    if None in layouts:
        return "an operand with no unit stride in its last two dims"
    (a_layout, lda), (b_layout, ldb) = layouts  # type: ignore[misc]
    if lda % align or ldb % align or (k if a_layout == "row" else m) % align or (k if b_layout == "col" else n) % align:
        return f"rows not 16-byte aligned (leading dims and contiguous extents must be multiples of {align})"
    if out_dtype == torch.float32 and (a_layout, b_layout) != ("row", "col"):
        return "float32 (TF32) with an operand not contiguous along K (TF32 wgmma reads K-major tiles)"
    if n % align:
        return f"N = {n} not a multiple of {align} (the output's rows must be 16-byte aligned)"
    if a.dim() == 3 and (a.stride(0) % align or b.stride(0) % align):
        return "batch strides not 16-byte aligned"
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != n or bias.stride(0) != 1):
        return "a bias that is not a contiguous vector of N elements"
    if residual is not None:
        if tuple(residual.shape[-2:]) != (m, n) or residual.stride(-1) != 1 or residual.stride(-2) % align \
                or (residual.dim() == 3 and residual.stride(0) % align) or residual.dim() != a.dim():
            return "a residual that is not row-major M x N with 16-byte aligned rows"
    return None


class _Runner:
    """One built kernel bound for calls: the library, and per problem (device, sizes, strides) its
    leading dimensions, batch strides and workspace, worked out on the first call of that problem
    (a graph's shapes are static: later calls look them up)."""

    def __init__(self, path: str):
        self.library = cutlass_build.load(path)
        self.problems: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def problem(self, a: torch.Tensor, b: torch.Tensor, residual: torch.Tensor | None,
                layouts: tuple) -> tuple:
        """(m, n, k, l, ld, batch, workspace address, workspace bytes) of a call."""
        key = (a.device, a.shape, a.stride(), b.shape, b.stride(), None if residual is None else residual.stride())
        found = self.problems.get(key)
        if found is not None:
            return found
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batched = a.dim() == 3
        ld = (ctypes.c_int64 * 5)(layouts[0][1], layouts[1][1], residual.stride(-2) if residual is not None else n, n, n)
        batch = (ctypes.c_int64 * 5)(*((a.stride(0), b.stride(0), residual.stride(0) if residual is not None else 0,
                                        m * n, m * n) if batched else (0,) * 5))
        sizes = (m, n, k, a.shape[0] if batched else 1)
        with self.lock:
            size = int(self.library.ait_cutlass_workspace(*sizes, ld, batch))
            workspace = torch.empty(max(size, 1), dtype=torch.uint8, device=a.device)
            found = (*sizes, ld, batch, workspace, workspace.numel())
            self.problems[key] = found
        return found


_runners: dict[str, _Runner] = {}
_runners_lock = threading.Lock()


def _runner(path: str) -> _Runner:
    with _runners_lock:
        runner = _runners.get(path)
        if runner is None:
            runner = _runners[path] = _Runner(path)
        return runner


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _reference(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
               activation: str, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's value through ATen, computed in float32 and rounded once as the kernel does."""
    pre = torch.matmul(a.float(), b.float()) * alpha
    if residual is not None:
        pre = pre + beta * residual.float()
    if bias is not None:
        pre = pre + bias.float()
    return apply_activation(pre, activation).to(a.dtype), pre.to(a.dtype)


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "identity":
        return x
    if activation == "gelu":
        return torch.nn.functional.gelu(x)
    if activation == "gelu_tanh":
        return torch.nn.functional.gelu(x, approximate="tanh")
    return getattr(torch, activation)(x) if activation in ("relu", "sigmoid", "tanh") else torch.nn.functional.silu(x)


_warned_fallback: set[str] = set()


def _by_aten(library: str, why: str, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None,
             residual: torch.Tensor | None, activation: str, alpha: float, beta: float, out: torch.Tensor,
             aux: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The call's value through ATen, with one warning per kernel: the program keeps running and
    its results stay right."""
    if library not in _warned_fallback:
        _warned_fallback.add(library)
        warnings.warn(f"ait_dynamo: a CUTLASS GEMM ({why}); ATen computes it", RuntimeWarning, stacklevel=3)
    value, before = _reference(a, b, bias, residual, activation, alpha, beta)
    out.copy_(value)
    if aux is not None:
        aux.copy_(before)
    return out, aux


def run(library: str, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
        activation: str, alpha: float, beta: float, pre: bool,
        strict: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Call the kernel built at ``library``: (out, pre-activation or None). A call CUTLASS cannot
    run (an operand address not 16-byte aligned; a status other than success) is computed by
    ATen with one warning, or raises with ``strict`` (measurements: a candidate that cannot run
    must not be timed as ATen)."""
    shape = (*a.shape[:-1], b.shape[-1])
    out = torch.empty(shape, dtype=a.dtype, device=a.device)
    aux = torch.empty(shape, dtype=a.dtype, device=a.device) if pre else None
    layouts = (operand_layout(a), operand_layout(b))
    tensors = [t for t in (a, b, bias, residual, out, aux) if t is not None]
    if None in layouts or any(t.data_ptr() % 16 for t in tensors):
        if strict:
            raise RuntimeError(f"CUTLASS GEMM {library}: an operand not 16-byte aligned")
        return _by_aten(library, "got an operand not 16-byte aligned", a, b, bias, residual, activation, alpha, beta,
                        out, aux)
    runner = _runner(library)
    m, n, k, l, ld, batch, workspace, workspace_bytes = runner.problem(a, b, residual, layouts)
    stream = runtime.raw_stream(a.device.index)  # the handle alone, as Triton's launches take it
    status = runner.library.ait_cutlass_run(
        a.data_ptr(), b.data_ptr(), _pointer(bias), _pointer(residual), out.data_ptr(), _pointer(aux),
        m, n, k, l, ld, batch, alpha, beta, workspace.data_ptr(), workspace_bytes, stream)
    if status != 0:
        why = f"failed with status {status} (1: cannot implement, 2: workspace, 3: initialise, 4: launch)"
        if strict:
            raise RuntimeError(f"CUTLASS GEMM {library} {why}")
        return _by_aten(library, why, a, b, bias, residual, activation, alpha, beta, out, aux)
    return out, aux


def call(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, library: str,
         activation: str, alpha: float, beta: float) -> torch.Tensor:
    """``ait::cutlass_gemm`` without the dispatcher (the generated wrapper binds it)."""
    return run(library, a, b, bias, residual, activation, alpha, beta, pre=False)[0]


def call_pre(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None, library: str,
             activation: str, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``ait::cutlass_gemm_pre`` without the dispatcher."""
    out, aux = run(library, a, b, bias, residual, activation, alpha, beta, pre=True)
    assert aux is not None
    return out, aux


def _empty_result(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.new_empty((*a.shape[:-1], b.shape[-1]))


@torch.library.custom_op("ait::cutlass_gemm", mutates_args=(), device_types="cuda")
def cutlass_gemm(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                 library: str, activation: str, alpha: float, beta: float) -> torch.Tensor:
    return call(a, b, bias, residual, library, activation, alpha, beta)


@cutlass_gemm.register_fake
def _(a, b, bias, residual, library, activation, alpha, beta):  # type: ignore[no-untyped-def]
    return _empty_result(a, b)


@torch.library.custom_op("ait::cutlass_gemm_pre", mutates_args=(), device_types="cuda")
def cutlass_gemm_pre(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                     library: str, activation: str, alpha: float, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    return call_pre(a, b, bias, residual, library, activation, alpha, beta)


@cutlass_gemm_pre.register_fake
def _(a, b, bias, residual, library, activation, alpha, beta):  # type: ignore[no-untyped-def]
    return _empty_result(a, b), _empty_result(a, b)


source.DIRECT_FUNCTIONS[torch.ops.ait.cutlass_gemm.default] = (__name__, "call")
source.DIRECT_FUNCTIONS[torch.ops.ait.cutlass_gemm_pre.default] = (__name__, "call_pre")
