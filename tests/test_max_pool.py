"""Max pooling without its indices as a generated kernel (issue 13): ``passes/pool_indices.py``
turns a ``max_pool2d_with_indices`` whose indices nothing reads into ``max_pool2d``, and the
planner fuses it as one masked load per window tap (``passes/fusion_shifted.py``,
``kernels/codegen_shifted.py``), its consumers joining the kernel. ResNet-50's stem pool was an
ATen call of 115 us against a floor of about 16 us (H200, batch 32, fp16)."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

from ait_dynamo import metrics
from ait_dynamo.kernels.runtime import triton_runs_on
from ait_dynamo.passes.pool_indices import drop_unused_pool_indices
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")
aten = torch.ops.aten


def _last_graph():
    return metrics.compiled_graphs[-1]


def _assert_pool_fused() -> None:
    graph = _last_graph()
    assert "aten.max_pool2d.default" in graph.fused_ops, (graph.fused_ops, graph.externs)
    assert not [op for op in graph.externs if "max_pool" in op], graph.externs


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", [
    ((2, 3, 9, 11), 3, 2, 1, 1, False),       # ResNet's stem pool, odd sizes
    ((2, 4, 8, 8), 2, 2, 0, 1, False),        # a plain 2 x 2 pool
    ((1, 3, 10, 7), (3, 2), (2, 1), (1, 0), 1, True),  # rectangular window, ceil mode
    ((2, 2, 11, 9), 3, 1, 1, 2, False),       # dilation 2
    ((3, 5, 6), 3, 3, 1, 1, True),            # unbatched 3-d input
    ((1, 1, 1, 5), (1, 3), 1, 0, 1, False),   # a 1-high image
    ((2, 3, 5, 5), 5, 1, 2, 1, False),        # 25 taps, padding on every side
], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_max_pool_runs_as_a_kernel_with_its_consumers(shape, kernel, stride, padding, dilation, ceil_mode, dtype):
    torch.manual_seed(0)
    x = torch.randn(*shape, device=DEVICE, dtype=dtype)

    def fn(x):
        pooled = nn.functional.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        return pooled * 3 + 1

    check_compiled(fn, x, backward=False, check_strides=True)
    _assert_pool_fused()
    graph = _last_graph()
    assert "aten.mul.Tensor" in graph.fused_ops and len(graph.kernels) == 1, graph.kernels


def test_channels_last_input_keeps_its_layout_and_values():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9, device=DEVICE).to(memory_format=torch.channels_last)
    out = check_compiled(lambda x: nn.functional.max_pool2d(x.relu(), 3, 2, 1), x, backward=False, check_strides=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    _assert_pool_fused()


def test_padding_never_wins_over_negative_values_and_nan_propagates():
    """Padding reads as -inf, not 0: an all-negative image pools to negative values. A NaN in a
    window makes its result NaN, as ATen's kernel does."""
    x = -torch.rand(1, 2, 5, 5, device=DEVICE) - 1
    x[0, 1, 2, 2] = float("nan")
    x[0, 0, 0, 0] = float("-inf")
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: nn.functional.max_pool2d(x, 3, 2, 1), backend="ait")
    actual, expected = compiled(x), nn.functional.max_pool2d(x, 3, 2, 1)
    torch.testing.assert_close(actual, expected, equal_nan=True)
    assert (actual[0, 0] < 0).all() and actual[0, 1].isnan().any()
    _assert_pool_fused()


def test_training_keeps_the_indices_the_backward_reads():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, device=DEVICE, requires_grad=True)
    check_compiled(lambda x: nn.functional.max_pool2d(x.sin(), 3, 2, 1).cos(), x)
    forward = [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]
    assert "aten.max_pool2d_with_indices.default" in forward.externs, forward.externs


def test_windows_of_more_than_25_taps_stay_in_aten_and_say_why():
    x = torch.randn(1, 2, 9, 9, device=DEVICE)
    check_compiled(lambda x: nn.functional.max_pool2d(x, 7, 1, 3) + 1, x, backward=False)
    graph = _last_graph()
    assert "aten.max_pool2d.default" in graph.externs, graph.externs
    assert any("taps" in reason for reason in graph.refused.values()), graph.refused


def test_the_rewrite_leaves_a_pool_whose_indices_are_read():
    def fn(x):
        values, indices = aten.max_pool2d_with_indices.default(x, [2, 2], [2, 2])
        return values + 1, indices

    gm = torch.fx.experimental.proxy_tensor.make_fx(fn, tracing_mode="fake")(torch.randn(1, 2, 4, 4))
    targets = [n.target for n in drop_unused_pool_indices(gm, None).graph.nodes]
    assert aten.max_pool2d_with_indices.default in targets and aten.max_pool2d.default not in targets

    gm = torch.fx.experimental.proxy_tensor.make_fx(lambda x: fn(x)[0], tracing_mode="fake")(torch.randn(1, 2, 4, 4))
    targets = [n.target for n in drop_unused_pool_indices(gm, None).graph.nodes]
    assert aten.max_pool2d.default in targets and aten.max_pool2d_with_indices.default not in targets
    assert operator.getitem not in targets


class _Stem(nn.Module):
    """ResNet's stem: 7 x 7 stride-2 convolution, batch norm, ReLU, 3 x 3 stride-2 max pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x):
        return self.pool(self.bn(self.conv(x)).relu())


def test_resnet_stem_in_eval_pools_in_a_kernel():
    torch.manual_seed(0)
    stem = _Stem().to(DEVICE).eval().requires_grad_(False)
    with torch.no_grad():
        stem.bn.running_mean.uniform_(-0.5, 0.5)
        stem.bn.running_var.uniform_(0.5, 2.0)
    check_compiled(stem, torch.randn(2, 3, 29, 23, device=DEVICE), backward=False, check_strides=True)
    _assert_pool_fused()
