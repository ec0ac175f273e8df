"""Seeded random convolutional networks through ait, against eager and the fp64 reference.

Each seed builds a small network from the pieces the model suite's CNNs are made of: plain,
strided, grouped and depthwise convolutions with and without bias, batch norm (training and
inference), ReLU / ReLU6 / SiLU / GELU / Hardswish, residual adds, squeeze-excitation, max and
average pooling, LayerNorm over channels (ConvNeXt's permute - norm - permute) and a linear head.
The seed also picks the dtype, the input's memory format, training or inference, and ait options
(channels-last forced, fused training batch norm, a memory budget for the partitioner), so that
the memory-scheduling passes (sinking, hoisting, slot hand-overs, recomputed broadcasts) see
graphs nobody wrote a test for. Forward, gradients of the input and every parameter, and the
batch norms' running statistics after the call are all checked against fp64.

``AIT_RANDOM_CONVNETS=N`` runs N seeds (default 24, about 1.5 s each under the interpreter).

Half precision is judged by the distribution of errors (``utils.RULES``). Seeds 73, 242, 437 and
564 failed until ``passes/conv_bias.py`` stopped splitting half-precision convolution biases off
CUDA: split, a convolution's output was rounded before its bias was added, where CPU eager rounds
once, and a training batch norm over few values per channel amplified that (the input gradient's
RMSE 4.6x eager's on seed 437; ``benchmarks/results/cpu-triton-interpreter/random_programs/``). In
an earlier run of 300 seeds (half precision then drew kinks too), the two bfloat16 failures were
gradients routed through another max-pool winner or ReLU branch than eager's (``SMOOTH_ACTIVATIONS``).
"""

from __future__ import annotations

import os
import random

import pytest
import torch
from torch import nn

from ait_dynamo import metrics
from utils import check_compiled, needs_cpu_triton

pytestmark = pytest.mark.usefixtures("generated_kernels_must_not_fail")

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish)
# In half precision ait's fused kernels round once where eager rounds after every op, so values
# differ from eager's by an ulp here and there; where that moves an input across a kink (ReLU's
# zero, a max pool's winner) the gradient takes another branch than eager's and than float64's,
# a discrete difference no tolerance describes. Half-precision networks are drawn smooth.
SMOOTH_ACTIVATIONS = (nn.SiLU, nn.GELU, nn.Tanh)


class ChannelNorm(nn.Module):
    """ConvNeXt's LayerNorm over channels of an NCHW tensor, through NHWC."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Residual(nn.Module):
    """``act(body(x) + x)``, or ``body(x) + x`` without an activation."""

    def __init__(self, body: nn.Module, activation: nn.Module | None):
        super().__init__()
        self.body = body
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x) + x
        return y if self.activation is None else self.activation(y)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int, gate: nn.Module):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * scale


class Head(nn.Module):
    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _conv_bn(rng: random.Random, channels_in: int, channels_out: int, kernel: int, stride: int, groups: int,
             activation: bool, smooth: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(channels_in, channels_out, kernel, stride, kernel // 2, groups=groups,
                                         bias=rng.random() < 0.3)]
    if rng.random() < 0.85:
        layers.append(nn.BatchNorm2d(channels_out))
    if activation:
        layers.append(rng.choice(SMOOTH_ACTIVATIONS if smooth else ACTIVATIONS)())
    return layers


def _network(seed: int, channels: int, size: int, smooth: bool) -> tuple[nn.Module, int]:
    """A random stack of blocks and its output size (the spatial size shrinks with strides);
    ``smooth``: no kinks (see ``SMOOTH_ACTIVATIONS``), average pooling instead of max."""
    rng = random.Random(seed)
    layers: list[nn.Module] = _conv_bn(rng, 3, channels, 3, rng.choice((1, 2)), 1, True, smooth)
    size = (size + 1) // 2 if layers[0].stride[0] == 2 else size
    for _ in range(rng.randrange(2, 5)):
        kind = rng.randrange(7)
        if kind == 0:  # conv - BN - act, maybe strided, maybe wider
            wider = channels + rng.choice((0, 2))
            stride = 2 if size > 3 and rng.random() < 0.4 else 1
            layers += _conv_bn(rng, channels, wider, rng.choice((1, 3)), stride, 1, True, smooth)
            channels, size = wider, (size + 1) // 2 if stride == 2 else size
        elif kind == 1:  # ResNet's basic block
            body = nn.Sequential(*_conv_bn(rng, channels, channels, 3, 1, 1, True, smooth),
                                 *_conv_bn(rng, channels, channels, 3, 1, 1, False, smooth))
            activation = rng.choice(SMOOTH_ACTIVATIONS if smooth else ACTIVATIONS)() if rng.random() < 0.8 else None
            layers.append(Residual(body, activation))
        elif kind == 2:  # MobileNet's inverted residual: expand, depthwise, project
            hidden = channels * 2
            body = nn.Sequential(*_conv_bn(rng, channels, hidden, 1, 1, 1, True, smooth),
                                 *_conv_bn(rng, hidden, hidden, 3, 1, hidden, True, smooth),
                                 *_conv_bn(rng, hidden, channels, 1, 1, 1, False, smooth))
            layers.append(Residual(body, None))
        elif kind == 3:  # squeeze-excitation after a depthwise convolution
            layers += _conv_bn(rng, channels, channels, 3, 1, channels, True, smooth)
            layers.append(SqueezeExcitation(channels, max(1, channels // 3),
                                            nn.Sigmoid() if smooth or rng.random() < 0.5 else nn.Hardsigmoid()))
        elif kind == 4 and size >= 3:  # pooling
            if rng.random() < 0.6 and not smooth:
                layers.append(nn.MaxPool2d(3, 2, 1))
            else:
                layers.append(nn.AvgPool2d(2, 2, ceil_mode=True))
            size = (size + 1) // 2
        elif kind == 5:  # ConvNeXt: depthwise 7x7 (or 3x3), channel norm, pointwise MLP, residual
            body = nn.Sequential(nn.Conv2d(channels, channels, rng.choice((3, 7)), padding="same", groups=channels),
                                 ChannelNorm(channels), nn.Conv2d(channels, 2 * channels, 1), nn.GELU(),
                                 nn.Conv2d(2 * channels, channels, 1))
            layers.append(Residual(body, None))
        else:  # grouped convolution
            groups = 2 if channels % 2 == 0 else 1
            layers += _conv_bn(rng, channels, channels, 3, 1, groups, True, smooth)
    layers.append(Head(channels, 5))
    return nn.Sequential(*layers), size


def _with_statistics(model: nn.Module, rng: random.Random) -> nn.Module:
    """Running statistics and affine parameters away from their defaults."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
                module.momentum = rng.choice((0.1, 0.3, None))
    return model


def _case(seed: int) -> tuple[nn.Module, torch.Tensor, dict, str]:
    rng = random.Random(seed * 7919 + 1)
    channels, size = rng.choice((4, 5, 6, 8)), rng.choice((5, 7, 8, 11))
    dtype = rng.choice((torch.float32, torch.float32, torch.bfloat16, torch.float16))
    torch.manual_seed(seed)
    model, _ = _network(seed, channels, size, smooth=dtype != torch.float32)
    model = _with_statistics(model, rng)
    training = rng.random() < 0.6
    model = model.to(dtype).train(training)
    x = torch.randn(rng.choice((1, 2, 3)), 3, size, size, dtype=dtype)
    if rng.random() < 0.5:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(rng.random() < 0.7)
    options: dict = {}
    if rng.random() < 0.4:
        options["channels_last"] = "on"
    if training and rng.random() < 0.3:
        options["fused_batch_norm_training"] = True
    if training and rng.random() < 0.25:
        options["memory_budget"] = 0.3
    description = (f"{dtype}, {'training' if training else 'inference'}, batch {x.shape[0]}, {size}x{size}, "
                   f"{'channels-last' if x.stride()[1] == 1 else 'NCHW'} input, options {options}")
    return model, x, options, description


# seeds that failed once, kept whatever AIT_RANDOM_CONVNETS says: 437, float16 training with 9
# values a channel, whose convolution bias split rounded twice where eager rounds once (passes/conv_bias.py)
REGRESSION_SEEDS = (437,)


@pytest.mark.parametrize("seed", sorted({*range(int(os.environ.get("AIT_RANDOM_CONVNETS", "24"))), *REGRESSION_SEEDS}))
@needs_cpu_triton
def test_random_convnet(seed):
    _check(seed, {}, generated=True)


@pytest.mark.parametrize("seed", range(int(os.environ.get("AIT_RANDOM_ATEN_PATH", "12"))))
def test_random_convnet_on_the_aten_path(seed):
    """The CPU without Triton's interpreter: nothing generated, ATen's ops with the passes of
    that path (in-place rewrites, negations cancelled, oneDNN's GEMMs, forced here)."""
    _check(seed, {"fusion": False, "onednn_gemms": "always"}, generated=False)


def _check(seed: int, extra_options: dict, generated: bool) -> None:
    model, x, options, description = _case(seed)
    options = {**options, **extra_options}
    # half-precision eager rounds every layer; judge by the distribution of errors, not elementwise
    rule = "elementwise" if x.dtype == torch.float32 else "distribution"
    try:
        check_compiled(model, x, options=options, rule=rule, check_strides=True)
    except AssertionError as error:
        raise AssertionError(f"seed {seed} ({description}, {extra_options}):\n{model}\n{error}") from None
    for graph in metrics.compiled_graphs:
        assert graph.fallback_reason is None, f"seed {seed}: {graph.fallback_reason}"
    kernels = [kernel for graph in metrics.compiled_graphs for kernel in graph.kernels]
    assert bool(kernels) == generated, f"seed {seed}: {len(kernels)} kernels generated"
