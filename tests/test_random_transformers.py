"""Seeded random transformer-like programs through ait, against eager and the fp64 reference.

Where ``test_fusion_random_graphs.py`` draws pointwise chains and reductions over one 2-D space,
these draw what language and vision transformers are made of, on [batch, tokens, features]
activations: linear layers (bias or not, the product read by its epilogue), heads split by
``view`` / ``permute`` and batched matmuls, softmax with a causal or padding mask, LayerNorm and
RMSNorm, GELU / SiLU / tanh-GELU gates, rotary-style halves, residual adds, casts to float32 and
back, ``chunk`` and ``cat``. The seed also picks the dtype, odd sizes (never multiples of a
block), whether GEMMs must run as the Triton template, and dynamic shapes. Forward and the
gradients of the input and every parameter are checked.

``AIT_RANDOM_TRANSFORMERS=N`` runs N seeds (default 24, about 1.5 s each under the interpreter).
Over 200 seeds on 2026-12-04, one failed: seed 135 (float16, two LayerNorms around a one-token
causal attention), the input gradient's largest error 1.8 ulps at an element of 4.8 where eager's
was 0.2 ulp, its RMSE within the rule. Elementwise judging flagged 10 of the 107 half-precision
seeds, each on one element: why half precision is judged by distribution here.
"""

from __future__ import annotations

import math
import os
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ait_dynamo import metrics
from utils import check_compiled, needs_cpu_triton

pytestmark = pytest.mark.usefixtures("generated_kernels_must_not_fail")


class RandomProgram(nn.Module):
    """A stack of ``steps`` drawn from the seed; every step maps [B, T, D] to [B, T, D]."""

    def __init__(self, seed: int, width: int, heads: int):
        super().__init__()
        rng = random.Random(seed)
        self.width, self.heads = width, heads
        self.steps = [rng.randrange(9) for _ in range(rng.randrange(3, 7))]
        self.choices = [rng.random() for _ in self.steps]
        self.layers = nn.ModuleList()
        for step, choice in zip(self.steps, self.choices):
            if step in (0, 1):  # attention: qkv projection, output projection
                self.layers.append(nn.ModuleList([nn.Linear(width, 3 * width, bias=choice < 0.7),
                                                  nn.Linear(width, width)]))
            elif step == 2:  # MLP
                self.layers.append(nn.ModuleList([nn.Linear(width, 2 * width + 1), nn.Linear(2 * width + 1, width,
                                                                                             bias=choice < 0.5)]))
            elif step == 3:  # gated MLP (Llama)
                self.layers.append(nn.ModuleList([nn.Linear(width, 2 * width, bias=False),
                                                  nn.Linear(width, width, bias=False)]))
            elif step == 4:
                self.layers.append(nn.LayerNorm(width, elementwise_affine=choice < 0.8))
            elif step == 5:  # RMSNorm as Llama and T5 write it
                self.layers.append(nn.ParameterList([nn.Parameter(torch.rand(width) + 0.5)]))
            else:
                self.layers.append(nn.Identity())

    def _attention(self, x: torch.Tensor, layer: nn.ModuleList, causal: bool, choice: float) -> torch.Tensor:
        batch, tokens, width = x.shape
        head = width // self.heads
        q, k, v = layer[0](x).view(batch, tokens, 3, self.heads, head).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head)
        if causal:
            mask = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        elif choice < 0.5:  # an additive padding mask on the last key
            scores = scores + torch.where(torch.arange(tokens, device=x.device) == tokens - 1, -1e4, 0.0).to(scores.dtype)
        weights = torch.softmax(scores.float(), -1).to(x.dtype)
        return x + layer[1]((weights @ v).transpose(1, 2).reshape(batch, tokens, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step, choice, layer in zip(self.steps, self.choices, self.layers):
            if step in (0, 1):
                x = self._attention(x, layer, causal=step == 1, choice=choice)
            elif step == 2:
                gate = F.gelu(layer[0](x), approximate="tanh" if choice < 0.5 else "none")
                x = x + layer[1](gate)
            elif step == 3:
                up, gate = layer[0](x).chunk(2, -1)
                x = x + layer[1](F.silu(gate) * up)
            elif step == 4:
                x = layer(x)
            elif step == 5:
                variance = x.float().pow(2).mean(-1, keepdim=True)
                x = (x.float() * torch.rsqrt(variance + 1e-6)).to(x.dtype) * layer[0]
            elif step == 6:  # rotary-style: halves swapped and one negated, mixed by fixed angles
                half = x.shape[-1] // 2
                rotated = torch.cat([-x[..., half:], x[..., :half]], -1) if x.shape[-1] % 2 == 0 else x.flip(-1)
                angles = torch.arange(x.shape[1], device=x.device, dtype=torch.float32)[:, None] * 0.1
                x = x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)
            elif step == 7:
                x = torch.tanh(x) * 0.5 + x.transpose(0, 1).contiguous().transpose(0, 1)
            else:
                x = x - x.mean(1, keepdim=True) if choice < 0.5 else x * torch.sigmoid(x.amax(-1, keepdim=True))
        return x


def _case(seed: int) -> tuple[nn.Module, torch.Tensor, dict, bool, str]:
    rng = random.Random(seed * 104729 + 3)
    heads = rng.choice((1, 2, 3))
    width = heads * rng.choice((4, 6, 8))
    batch, tokens = rng.choice((1, 2, 3)), rng.choice((1, 5, 7, 12))
    torch.manual_seed(seed)
    dtype = rng.choice((torch.float32, torch.float32, torch.bfloat16, torch.float16))
    model = RandomProgram(seed, width, heads).to(dtype)
    x = torch.randn(batch, tokens, width, dtype=dtype)
    if rng.random() < 0.3:  # a transposed input: tokens-major memory
        x = x.transpose(0, 1).contiguous().transpose(0, 1)
    x.requires_grad_(rng.random() < 0.8)
    options: dict = {}
    if rng.random() < 0.5:
        options["gemm_backends"] = ("triton",)
    dynamic = rng.random() < 0.15
    description = (f"{dtype}, batch {batch}, {tokens} tokens, width {width}, {heads} heads, steps {model.steps}, "
                   f"options {options}, dynamic {dynamic}")
    return model, x, options, dynamic, description


@pytest.mark.parametrize("seed", range(int(os.environ.get("AIT_RANDOM_TRANSFORMERS", "24"))))
@needs_cpu_triton
def test_random_transformer(seed):
    _check(seed, {})


@pytest.mark.parametrize("seed", range(int(os.environ.get("AIT_RANDOM_ATEN_PATH", "12"))))
def test_random_transformer_on_the_aten_path(seed):
    """The CPU without Triton's interpreter: nothing generated, ATen's ops with the passes of
    that path (in-place rewrites, negations cancelled, oneDNN's GEMMs, forced here)."""
    _check(seed, {"fusion": False, "onednn_gemms": "always"})
    assert not [g.name for g in metrics.compiled_graphs if g.kernels], f"seed {seed}: kernels were generated"


def _check(seed: int, extra_options: dict) -> None:
    model, x, options, dynamic, description = _case(seed)
    if extra_options:
        options = {key: value for key, value in options.items() if key != "gemm_backends"}
    options = {**options, **extra_options}
    # half-precision GEMMs sum in another order than eager's: judge by the distribution of errors
    rule = "elementwise" if x.dtype == torch.float32 else "distribution"
    try:
        check_compiled(model, x, options=options, dynamic=dynamic or None, rule=rule)
    except AssertionError as error:
        raise AssertionError(f"seed {seed} ({description}, {extra_options}):\n{error}") from None
    for graph in metrics.compiled_graphs:
        assert graph.fallback_reason is None, f"seed {seed}: {graph.fallback_reason}"
