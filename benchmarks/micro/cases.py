"""The micro-benchmark cases: small functions that each exercise one kernel family.

Each case runs as eager, Inductor and ait; ``prepare`` compiles it and checks the compiled result
against eager before anything is timed. Shapes: ``gpu`` (activation sizes of the seed models) and
``tiny`` (tests on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.nn import functional as F

from benchmarks.measure import TOLERANCES, max_relative_error
from benchmarks.models import tutorial_fn

FAMILIES = ("pointwise", "reduction", "gemm_epilogue")
BACKENDS = ("eager", "inductor", "ait")


@dataclass(frozen=True)
class MicroCase:
    family: str
    name: str
    fn: Callable[..., torch.Tensor]
    make_inputs: Callable[[bool, torch.device], tuple[torch.Tensor, ...]]  # (tiny, device) → inputs
    description: str

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


def _randn(device: torch.device, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype)


def _half(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


# --- pointwise --------------------------------------------------------------------------------


def _tutorial_inputs(tiny: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    rows, cols = (8, 16) if tiny else (4096, 4096)
    return tuple(_randn(device, torch.float32, rows, cols) for _ in range(4))


def bias_gelu_residual(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return F.gelu(x + bias) + residual


def _bias_gelu_inputs(tiny: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    rows, cols = (6, 10) if tiny else (8192, 4096)
    dtype = _half(device)
    return _randn(device, dtype, rows, cols), _randn(device, dtype, cols), _randn(device, dtype, rows, cols)


# --- reduction --------------------------------------------------------------------------------


def scaled_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x * 0.125, dim=-1)


def _softmax_inputs(tiny: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    rows, cols = (6, 10) if tiny else (16384, 1024)
    return (_randn(device, _half(device), rows, cols),)


def residual_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps=1e-5)


def _layer_norm_inputs(tiny: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
    rows, cols = (6, 12) if tiny else (32 * 196, 768)  # the encoder block's activations at batch 32
    dtype = _half(device)
    return (_randn(device, dtype, rows, cols), _randn(device, dtype, rows, cols),
            _randn(device, dtype, cols), _randn(device, dtype, cols))


# --- GEMM with epilogue -----------------------------------------------------------------------


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(F.linear(x, weight, bias))


def linear_residual_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         residual: torch.Tensor) -> torch.Tensor:
    return torch.relu(F.linear(x, weight, bias) + residual)


def _gemm_inputs(n_in: int, n_out: int, with_residual: bool) -> Callable[[bool, torch.device], tuple[torch.Tensor, ...]]:
    def make(tiny: bool, device: torch.device) -> tuple[torch.Tensor, ...]:
        rows, k, n = (5, 8, 12) if tiny else (4096, n_in, n_out)
        dtype = _half(device)
        inputs = [_randn(device, dtype, rows, k), _randn(device, dtype, n, k) * k**-0.5, _randn(device, dtype, n)]
        if with_residual:
            inputs.append(_randn(device, dtype, rows, n))
        return tuple(inputs)

    return make


CASES: tuple[MicroCase, ...] = (
    MicroCase("pointwise", "add4_cos_cos", tutorial_fn, _tutorial_inputs, "seed 004: (a+b+c+d).cos().cos(), fp32 4096x4096"),
    MicroCase("pointwise", "bias_gelu_residual", bias_gelu_residual, _bias_gelu_inputs, "gelu(x + bias) + residual, 8192x4096"),
    MicroCase("reduction", "scaled_softmax", scaled_softmax, _softmax_inputs, "softmax(x / 8) over 1024 columns"),
    MicroCase("reduction", "residual_layer_norm", residual_layer_norm, _layer_norm_inputs,
              "layer_norm(x + residual), 6272x768"),
    MicroCase("gemm_epilogue", "linear_gelu", linear_gelu, _gemm_inputs(512, 2048, False),
              "seed 001 dense1: gelu(x @ W.T + b), 4096x512 -> 2048"),
    MicroCase("gemm_epilogue", "linear_residual_relu", linear_residual_relu, _gemm_inputs(3072, 768, True),
              "relu(x @ W.T + b + residual), 4096x3072 -> 768"),
)


def cases_of(family: str) -> list[MicroCase]:
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}; valid: {', '.join(FAMILIES)}")
    return [case for case in CASES if case.family == family]


def compile_for(backend: str, fn: Callable[..., Any], options: dict[str, Any] | None = None) -> Callable[..., Any]:
    if backend == "eager":
        return fn
    if backend == "inductor":
        return torch.compile(fn, backend="inductor", dynamic=False)
    if backend == "ait":
        return torch.compile(fn, backend="ait", options=options or {}, dynamic=False)
    raise ValueError(f"unknown micro-benchmark backend {backend!r}; valid: {', '.join(BACKENDS)}")


def prepare(case: MicroCase, backend: str, device: torch.device, tiny: bool = False,
            ait_options: dict[str, Any] | None = None) -> tuple[Callable[..., Any], tuple[torch.Tensor, ...]]:
    """The compiled function and its inputs, after checking one compiled call against eager.

    Raises ``AssertionError`` naming the case if the result is wrong.
    """
    torch.manual_seed(0)
    inputs = case.make_inputs(tiny, device)
    fn = compile_for(backend, case.fn, ait_options)
    with torch.no_grad():
        actual = fn(*inputs)
        expected = case.fn(*inputs)
    precision = str(expected.dtype).replace("torch.", "")
    error = max_relative_error([actual], [expected])
    if error > TOLERANCES[precision]:
        raise AssertionError(f"{case.id} with {backend}: relative error {error:.3g} > {TOLERANCES[precision]:g}")
    return fn, inputs


def run_synchronized(fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...]) -> None:
    """One call, waiting for the device: what pytest-benchmark's wall clock should see."""
    with torch.no_grad():
        fn(*inputs)
    if inputs[0].is_cuda:
        torch.cuda.synchronize()


def bench(benchmark: Any, case: MicroCase, backend: str, device: torch.device | None = None, tiny: bool = False) -> None:
    """The body of every pytest-benchmark test: prepare (compile + check), then time (CUDA by default)."""
    fn, inputs = prepare(case, backend, device or torch.device("cuda"), tiny)
    benchmark.group = case.id
    benchmark.extra_info.update(family=case.family, case=case.name, backend=backend, description=case.description)
    benchmark.pedantic(run_synchronized, args=(fn, inputs), warmup_rounds=3, rounds=30, iterations=5)
