"""Max pooling without its indices as a generated kernel (issue 13): ``passes/pool_indices.py``
turns a ``max_pool2d_with_indices`` whose indices nothing reads into ``max_pool2d``, and the
planner fuses it as one masked load per window tap (``passes/fusion_shifted.py``,
``kernels/codegen_shifted.py``), its consumers joining the kernel. ResNet-50's stem pool was an
ATen call of 115 us against a floor of about 16 us (H200, batch 32, fp16)."""

from __future__ import annotations

import operator
import warnings

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


# --- training: int8 window offsets and our backward kernel (kernels/max_pool_offsets.py) ---------

OFFSETS_BACKWARD = "ait.max_pool2d_offsets_backward.default"

TRAINING_CASES = [
    ((2, 3, 9, 11), 3, 2, 1, 1, False),       # ResNet's stem pool, odd sizes
    ((2, 4, 8, 8), 2, 2, 0, 1, False),        # windows that do not overlap
    ((1, 3, 10, 7), (3, 2), (2, 1), (1, 0), 1, True),  # rectangular, ceil mode
    ((2, 2, 11, 9), 3, 1, 1, 2, False),       # dilation 2, stride 1: nine windows hold a pixel
    ((3, 5, 6), 3, 3, 1, 1, True),            # unbatched 3-d input
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", TRAINING_CASES, ids=str)
def test_training_saves_int8_offsets_and_gathers_the_gradient(shape, kernel, stride, padding, dilation, ceil_mode,
                                                               dtype, channels_last, tmp_path):
    if channels_last and len(shape) != 4:
        pytest.skip("channels-last needs a 4-d input")
    torch.manual_seed(0)
    x = torch.randn(*shape, device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    metrics.reset()
    check_compiled(lambda x: nn.functional.max_pool2d(x.sin(), kernel, stride, padding, dilation, ceil_mode).cos(), x,
                   options={"debug_dir": str(tmp_path)}, check_strides=True)
    backward = [g for g in metrics.compiled_graphs if g.kind == "backward"][-1]
    assert OFFSETS_BACKWARD in backward.externs, backward.externs
    assert "aten.max_pool2d_with_indices_backward.default" not in backward.externs
    # the backward receives one byte per pooled value, not ATen's int64 index
    signature = (tmp_path / backward.name / "00-input.txt").read_text().split("def forward(self,")[1].split("):")[0]
    assert '"i8[' in signature and '"i64[' not in signature, signature


def _ties_and_gradient(channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An input of small integers (ties in most windows, whose index ATen picks), -inf in a
    corner, and integer output gradients: every sum is exact, so ours must equal ATen's."""
    torch.manual_seed(1)
    x = torch.randint(-2, 3, (2, 5, 9, 10), device=DEVICE).float()
    x[:, :, :3, :3] = float("-inf")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    values, indices = aten.max_pool2d_with_indices.default(x, [3, 3], [2, 2], [1, 1])
    return x, indices, torch.randint(-3, 4, values.shape, device=DEVICE).float()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_the_offsets_backward_equals_atens_on_ties(channels_last):
    from ait_dynamo.kernels import max_pool_offsets

    x, indices, grad = _ties_and_gradient(channels_last)
    offsets = max_pool_offsets.window_offsets(indices, x.shape[-1], (3, 3), (2, 2), (1, 1), (1, 1))
    assert offsets.dtype == torch.int8 and int(offsets.min()) >= 0 and int(offsets.max()) < 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kernel's result, not the fallback's (which warns)
        got = max_pool_offsets.offsets_backward(grad, x, [3, 3], [2, 2], [1, 1], [1, 1], False, offsets)
    expected = aten.max_pool2d_with_indices_backward.default(grad, x, [3, 3], [2, 2], [1, 1], [1, 1], False, indices)
    assert torch.equal(got, expected) and got.stride() == expected.stride()


def test_a_failing_offsets_kernel_warns_once_and_aten_runs(monkeypatch):
    from ait_dynamo.kernels import max_pool_offsets, runtime

    def broken(*args, **kwargs):
        raise RuntimeError("injected launch failure")

    monkeypatch.setattr(runtime, "launch", broken)
    x, indices, grad = _ties_and_gradient(True)
    offsets = max_pool_offsets.window_offsets(indices, x.shape[-1], (3, 3), (2, 2), (1, 1), (1, 1))
    expected = aten.max_pool2d_with_indices_backward.default(grad, x, [3, 3], [2, 2], [1, 1], [1, 1], False, indices)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                got = max_pool_offsets.offsets_backward(grad, x, [3, 3], [2, 2], [1, 1], [1, 1], False, offsets)
                assert torch.equal(got, expected)
        assert len([w for w in caught if "injected launch failure" in str(w.message)]) == 1
    finally:
        runtime.BROKEN.discard(max_pool_offsets._offsets_backward_kernel)


def test_windows_of_more_taps_than_an_int8_holds_keep_atens_backward():
    x = torch.randn(1, 2, 13, 13, device=DEVICE, requires_grad=True)
    metrics.reset()
    check_compiled(lambda x: nn.functional.max_pool2d(x, 12, 1, 0).exp(), x)
    backward = [g for g in metrics.compiled_graphs if g.kind == "backward"][-1]
    assert "aten.max_pool2d_with_indices_backward.default" in backward.externs, backward.externs
