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

FAMILIES = ("pointwise", "reduction", "gemm_epilogue", "gemm", "depthwise")
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

def _depthwise(name: str, channels: int, size: int, kernel: int, stride: int, activation: str,
               description: str) -> Workload:
    """Depthwise convolution + the folded batch norm (a per-channel scale and shift) + activation
    on a channels-last activation at batch 32 (issue 13, item 4): cuDNN and one fused pointwise
    kernel (eager's ops, ait's default, Inductor) against ait's template with the epilogue fused
    (``ait+gemm_backends=triton``) and the measured choice (``ait+autotune=1``):
        python -m benchmarks micro --families depthwise --out DIR --backends \\
            "eager,inductor,ait,ait+gemm_backends=triton,ait+autotune=1"
    """
    act = {"relu": F.relu, "hardswish": F.hardswish, "silu": F.silu, "none": lambda t: t}[activation]

    def fn(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, weight, stride=stride, padding=kernel // 2, groups=x.shape[1])
        return act(y * scale[None, :, None, None] + shift[None, :, None, None])

    def build(scale_name: str, batch: int | None, device: torch.device) -> Built:
        n, c, hw = {"seed": (32, channels, size), "small": (2, channels, min(size, 28)), "tiny": (2, 6, 7)}[scale_name]
        dtype = inference_dtype(device)
        x = randn(n, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        weight = randn(c, 1, kernel, kernel, device=device, dtype=dtype) * 0.3
        scale, shift = torch.rand(c, device=device, dtype=dtype) + 0.5, randn(c, device=device, dtype=dtype)
        return Built(fn, (x, weight, scale, shift), "inference", precision_name(dtype), f"{n}x{c}x{hw}x{hw}")

    return Workload(f"depthwise/{name}", "micro", "inference", description, build, suite="micro")


# The largest depthwise layers of the model suite's CNNs at batch 32 (channels, input size).
DEPTHWISE_CASES: tuple[Workload, ...] = (
    _depthwise("mobilenet_3x3_s2_64_relu", 64, 112, 3, 2, "relu",
               "MobileNetV3-L block 2: 3x3 stride 2, 64 ch, 112 -> 56, ReLU"),
    _depthwise("mobilenet_5x5_s2_72_relu", 72, 56, 5, 2, "relu",
               "MobileNetV3-L block 4: 5x5 stride 2, 72 ch, 56 -> 28, ReLU"),
    _depthwise("mobilenet_3x3_240_hswish", 240, 28, 3, 1, "hardswish", "MobileNetV3-L: 3x3, 240 ch at 28, hardswish"),
    _depthwise("efficientnet_3x3_32_silu", 32, 112, 3, 1, "silu", "EfficientNet-B0 stage 1: 3x3, 32 ch at 112, SiLU"),
    _depthwise("efficientnet_3x3_s2_96_silu", 96, 112, 3, 2, "silu",
               "EfficientNet-B0 stage 2: 3x3 stride 2, 96 ch, 112 -> 56, SiLU"),
    _depthwise("convnext_7x7_96", 96, 56, 7, 1, "none", "ConvNeXt-T stage 1: 7x7, 96 ch at 56 (its LayerNorm follows)"),
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
) + GEMM_CASES + DEPTHWISE_CASES


def cases_of(family: str) -> list[Workload]:
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}; valid: {', '.join(FAMILIES)}")
    return [case for case in CASES if family_of(case) == family]
