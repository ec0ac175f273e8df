"""The micro-benchmark cases: small functions that each exercise one kernel family.

Each case is a ``Workload`` of the ``micro`` suite named ``<family>/<case>`` (forward only, under
``torch.no_grad``), so ``python -m benchmarks micro`` runs it through the one harness (checked
against eager and float64, then timed), and ``pytest benchmarks/micro --benchmark-only`` times the
same build with pytest-benchmark. Shapes: ``seed`` (activation sizes of the seed models, fp16 on
CUDA), ``small`` (a CPU in seconds) and ``tiny`` (tests). A new case is one more entry in ``CASES``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F

from benchmarks.models import tutorial_fn
from benchmarks.workload_types import Built, Workload, inference_dtype, precision_name, randn

FAMILIES = ("pointwise", "reduction", "gemm_epilogue", "gemm")
BACKENDS = ("eager", "inductor", "ait")


def family_of(workload: Workload) -> str:
    return workload.name.split("/", 1)[0]


def _case(family: str, name: str, fn: Callable[..., torch.Tensor], shapes: dict[str, list[tuple[int, ...]]],
          description: str, dtype: torch.dtype | None = None) -> Workload:
    """A micro case: ``fn`` on random inputs of ``shapes[scale]`` (fp16 on CUDA, fp32 on a CPU
    unless ``dtype`` is given)."""

    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        chosen = dtype or inference_dtype(device)
        inputs = tuple(randn(*shape, device=device, dtype=chosen) for shape in shapes[scale])
        return Built(fn, inputs, "inference", precision_name(chosen), "x".join(map(str, shapes[scale][0])))

    return Workload(f"{family}/{name}", "micro", "inference", description, build, suite="micro")


def bias_gelu_residual(x: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return F.gelu(x + bias) + residual


def scaled_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x * 0.125, dim=-1)


def residual_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x + residual, (x.shape[-1],), weight, bias, eps=1e-5)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.gelu(F.linear(x, weight, bias))


def linear_residual_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         residual: torch.Tensor) -> torch.Tensor:
    return torch.relu(F.linear(x, weight, bias) + residual)


def _rows_and_vectors(rows: dict[str, tuple[int, int]], matrices: int, vectors: int) -> dict[str, list[tuple[int, ...]]]:
    """Per scale: ``matrices`` inputs of the (rows, cols) shape, then ``vectors`` of (cols,)."""
    return {scale: [shape] * matrices + [shape[1:]] * vectors for scale, shape in rows.items()}


def _gemm(rows: int, k: int, n: int, residual: bool) -> dict[str, list[tuple[int, ...]]]:
    """x (rows, k), weight (n, k), bias (n,) [, residual (rows, n)] per scale."""
    sizes = {"seed": (rows, k, n), "small": (256, k // 4, n // 4), "tiny": (5, 8, 12)}
    return {scale: [(r, kk), (nn, kk), (nn,)] + ([(r, nn)] if residual else []) for scale, (r, kk, nn) in sizes.items()}


def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


# The GEMM template's cases (issue 14), meant for these backends: ``eager`` (cuBLAS and eager
# epilogue ops), ``ait`` (cuBLAS + one fused epilogue kernel), ``ait+gemm_backends=triton``
# (the Triton template with its epilogue fused), ``ait+autotune=1`` (the measured choice between
# those two), ``inductor``, ``inductor-max-autotune``:
#   python -m benchmarks micro --families gemm,gemm_epilogue --out DIR --backends \
#       "eager,inductor,inductor-max-autotune,ait,ait+gemm_backends=triton,ait+autotune=1"
GEMM_CASES: tuple[Workload, ...] = (
    _case("gemm", "mm_8192_bf16", product,
          {"seed": [(8192, 8192), (8192, 8192)], "small": [(512, 512), (512, 512)], "tiny": [(5, 8), (8, 12)]},
          "a @ b, 8192^3 bf16: the template against cuBLAS", dtype=torch.bfloat16),
    _case("gemm_epilogue", "mlp_fc1_gelu", linear_gelu, _gemm(1024, 512, 2048, residual=False),
          "seed 001 simple MLP: gelu(x @ W.T + b), 1024x512 -> 2048"),
    _case("gemm_epilogue", "encoder_fc1_gelu", linear_gelu, _gemm(32 * 196, 768, 3072, residual=False),
          "seed 002 encoder block at batch 32: gelu(x @ W.T + b), 6272x768 -> 3072"),
    _case("gemm_epilogue", "encoder_fc2_residual", linear_residual_relu, _gemm(32 * 196, 3072, 768, residual=True),
          "seed 002 encoder block at batch 32: relu(x @ W.T + b + residual), 6272x3072 -> 768"),
)

CASES: tuple[Workload, ...] = (
    _case("pointwise", "add4_cos_cos", tutorial_fn,
          _rows_and_vectors({"seed": (4096, 4096), "small": (512, 512), "tiny": (8, 16)}, 4, 0),
          "seed 004: (a+b+c+d).cos().cos(), fp32 4096x4096", dtype=torch.float32),
    _case("pointwise", "bias_gelu_residual", bias_gelu_residual,
          {scale: [shape, shape[1:], shape] for scale, shape in
           {"seed": (8192, 4096), "small": (512, 1024), "tiny": (6, 10)}.items()},
          "gelu(x + bias) + residual, 8192x4096"),
    _case("reduction", "scaled_softmax", scaled_softmax,
          _rows_and_vectors({"seed": (16384, 1024), "small": (1024, 512), "tiny": (6, 10)}, 1, 0),
          "softmax(x / 8) over 1024 columns"),
    _case("reduction", "residual_layer_norm", residual_layer_norm,  # the encoder block's activations at batch 32
          _rows_and_vectors({"seed": (32 * 196, 768), "small": (512, 768), "tiny": (6, 12)}, 2, 2),
          "layer_norm(x + residual), 6272x768"),
    _case("gemm_epilogue", "linear_gelu", linear_gelu, _gemm(4096, 512, 2048, residual=False),
          "seed 001 dense1: gelu(x @ W.T + b), 4096x512 -> 2048"),
    _case("gemm_epilogue", "linear_residual_relu", linear_residual_relu, _gemm(4096, 3072, 768, residual=True),
          "relu(x @ W.T + b + residual), 4096x3072 -> 768"),
) + GEMM_CASES


def cases_of(family: str) -> list[Workload]:
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}; valid: {', '.join(FAMILIES)}")
    return [case for case in CASES if family_of(case) == family]
