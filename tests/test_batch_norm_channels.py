"""Training batch norm's reductions as our Triton kernels (kernels/batch_norm_channels.py) and the
passes that call them (passes/batch_norm_split.py forward, passes/batch_norm_backward_split.py
backward): each kernel against a float64 reference, the fallbacks, and whole training steps
against eager, with the structure the passes promise."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from ait_dynamo import metrics
from ait_dynamo.kernels import batch_norm_channels, runtime
from test_batch_norm_split import Bottleneck
from utils import needs_cpu_triton, train_side_by_side

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = needs_cpu_triton if DEVICE == "cpu" else []

STATISTICS = "ait_dynamo.kernels.batch_norm_channels.channel_statistics"
GRADIENT_SUMS = "ait_dynamo.kernels.batch_norm_channels.channel_gradient_sums"


@pytest.fixture(autouse=True)
def no_tf32():
    """Eager and compiled run the same cuDNN convolutions; with TF32 a 1e-7 difference in the
    parameters after a step can round differently and show as 1e-3 in the next step's output."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            yield
    finally:
        matmul.allow_tf32 = saved


def _rows_of_channels(shape: tuple[int, ...], dtype: torch.dtype, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    x = (torch.randn(shape, dtype=torch.float64) * scale + offset).to(dtype=dtype, device=DEVICE)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _grid(x: torch.Tensor, multiprocessors: int = 4) -> tuple[int, ...]:
    channels = x.shape[1]
    return batch_norm_channels.channel_grid(x.numel() // channels, channels, multiprocessors).fields()


def _dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


# (shape, multiprocessors): odd channel counts (not multiples of the 64-channel block), one channel,
# two rows, 2-d input, and enough programs wanted for several row splits
SHAPES = [((4, 8, 9, 7), 4), ((3, 70, 5, 5), 4), ((33, 5), 4), ((2, 1, 3, 3), 4), ((2, 3, 1, 1), 4),
          ((8, 24, 20, 20), 64), ((5, 130, 7, 3), 16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,multiprocessors", SHAPES)
def test_statistics_and_running_updates_match_float64(shape, multiprocessors, dtype):
    torch.manual_seed(0)
    x = _rows_of_channels(shape, dtype, scale=2.0, offset=3.0)
    channels = shape[1]
    running_mean = torch.randn(channels, device=DEVICE)
    running_var = torch.rand(channels, device=DEVICE) + 0.5
    old_mean, old_var = running_mean.double(), running_var.double()
    grid = _grid(x, multiprocessors)
    mean, invstd = batch_norm_channels.channel_statistics(x, running_mean, running_var, 0.1, 1e-5, grid)
    x64 = x.double()
    expected_mean = x64.mean(_dims(x))
    torch.testing.assert_close(mean.double(), expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(invstd.double(), (x64.var(_dims(x), unbiased=False) + 1e-5).rsqrt(), rtol=2e-6, atol=0)
    torch.testing.assert_close(running_mean.double(), 0.9 * old_mean + 0.1 * expected_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(running_var.double(), 0.9 * old_var + 0.1 * x64.var(_dims(x)), rtol=2e-6, atol=1e-6)
    assert mean.dtype == invstd.dtype == torch.float32 and mean.shape == (channels,)


def test_repeated_calls_give_the_same_bits():
    """The finishing program resets its ticket: every call finishes, in the same order."""
    torch.manual_seed(0)
    x = _rows_of_channels((4, 24, 10, 10), torch.bfloat16)
    dy = _rows_of_channels((4, 24, 10, 10), torch.bfloat16)
    grid = _grid(x, 64)
    assert grid[3] > 1  # several splits: a ticket is taken
    first = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
    sums = batch_norm_channels.channel_gradient_sums(dy, x, *first, torch.ones(24, device=DEVICE), grid)
    for _ in range(3):
        again = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
        assert all(torch.equal(a, b) for a, b in zip(again, first))
        sums_again = batch_norm_channels.channel_gradient_sums(dy, x, *again, torch.ones(24, device=DEVICE), grid)
        assert all(torch.equal(a, b) for a, b in zip(sums_again, sums))


def test_statistics_stay_exact_far_from_zero_and_with_an_outlier_first_row():
    """The kernel works on x minus the first row: for values near their mean that is exact, and
    an outlier first row costs no more than plain Welford (ATen's method)."""
    torch.manual_seed(0)
    for offset, outlier in ((1e4, None), (0.0, 1e4)):
        x = _rows_of_channels((8, 24, 20, 20), torch.float32, scale=0.5, offset=offset)
        if outlier is not None:
            x[0, :, 0, 0] = outlier
        mean, invstd = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, _grid(x, 64))
        x64 = x.double()
        expected = (x64.var(_dims(x), unbiased=False) + 1e-5).rsqrt()
        torch.testing.assert_close(invstd.double(), expected, rtol=2e-6, atol=0)
        # the outlier moves K by 1e4 / 64 rows: the mean keeps 6e-6 (plain Welford's error at
        # such an offset; kernels/batch_norm_channels.py's doc)
        torch.testing.assert_close(mean.double(), x64.mean(_dims(x)), rtol=1e-5, atol=1e-6)


def _reference_backward(x: torch.Tensor, dy: torch.Tensor, weight: torch.Tensor | None) -> tuple:
    channels = x.shape[1]
    x64 = x.double().requires_grad_()
    w64 = weight.double().requires_grad_() if weight is not None else None
    b64 = torch.zeros(channels, dtype=torch.float64, device=DEVICE, requires_grad=weight is not None)
    out = nn.functional.batch_norm(x64, None, None, w64, b64 if weight is not None else None, True, 0.1, 1e-5)
    out.backward(dy.double())
    return x64.grad, (w64.grad if w64 is not None else None), (b64.grad if weight is not None else None)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,multiprocessors", SHAPES)
def test_gradient_sums_give_eagers_gradients(shape, multiprocessors, dtype, affine):
    torch.manual_seed(1)
    x = _rows_of_channels(shape, dtype, scale=2.0, offset=1.0)
    dy = _rows_of_channels(shape, dtype)
    channels = shape[1]
    weight = torch.randn(channels, device=DEVICE) if affine else None
    grid = _grid(x, multiprocessors)
    mean, invstd = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
    mean_dy, projection, scale, grad_weight, grad_bias = batch_norm_channels.channel_gradient_sums(
        dy, x, mean, invstd, weight, grid)
    view = [1, channels] + [1] * (x.dim() - 2)
    grad_input = (dy.double() - mean_dy.double().view(view)
                  - (x.double() - mean.double().view(view)) * projection.double().view(view)) * scale.double().view(view)
    expected_input, expected_weight, expected_bias = _reference_backward(x, dy, weight)
    # as close to float64 as eager's own kernel (two rows per channel cancel badly in both)
    x_eager = x.detach().clone().requires_grad_()
    nn.functional.batch_norm(x_eager, None, None, weight, None, True, 0.1, 1e-5).backward(dy)
    eager_error = (x_eager.grad.double() - expected_input).abs().max().item()
    error = (grad_input - expected_input).abs().max().item()
    assert error <= 2 * eager_error + 2e-6 * expected_input.abs().max().item(), (error, eager_error)
    if affine:
        assert grad_weight.dtype == grad_bias.dtype == weight.dtype
        torch.testing.assert_close(grad_weight.double(), expected_weight, rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(grad_bias.double(), expected_bias, rtol=2e-5, atol=2e-5)
    else:
        assert grad_weight is None and grad_bias is None and torch.equal(scale, invstd)


def test_another_layout_at_run_time_takes_the_aten_fallback(monkeypatch):
    """The trace predicted rows of channels; an input laid out otherwise (an ATen result that came
    out NCHW) must not be read as rows: the fallback computes the same values, no kernel runs."""
    launched = []
    monkeypatch.setattr(runtime, "launch", lambda *a, **k: launched.append(a[0]))
    monkeypatch.setattr(batch_norm_channels, "_BOUND", {})  # a launch would go through runtime.launch
    x = _rows_of_channels((3, 6, 5, 4), torch.float32).contiguous()
    grid = _grid(x)
    mean, invstd = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
    assert not launched
    torch.testing.assert_close(mean, x.mean(_dims(x)))
    dy = torch.randn_like(x)
    weight = torch.randn(6, device=DEVICE)
    _, _, scale, grad_weight, _ = batch_norm_channels.channel_gradient_sums(dy, x, mean, invstd, weight, grid)
    assert not launched
    torch.testing.assert_close(grad_weight.double(), _reference_backward(x, dy, weight)[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scale, invstd * weight)


def test_a_failing_kernel_warns_once_and_falls_back(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected launch failure")

    monkeypatch.setattr(runtime, "launch", broken)
    monkeypatch.setattr(batch_norm_channels, "_BOUND", {})  # no launcher bound by an earlier test
    kernels = batch_norm_channels._STATISTICS_KERNELS
    try:
        x = _rows_of_channels((4, 5, 3, 3), torch.float32)
        running_mean, running_var = torch.zeros(5, device=DEVICE), torch.ones(5, device=DEVICE)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                mean, invstd = batch_norm_channels.channel_statistics(x, running_mean, running_var, 0.1, 1e-5, _grid(x))
        assert len([w for w in caught if "injected launch failure" in str(w.message)]) == 1
        x64 = x.double()
        torch.testing.assert_close(invstd.double(), (x64.var(_dims(x), unbiased=False) + 1e-5).rsqrt(), rtol=1e-5, atol=0)
        expected_mean = 0.81 * 0 + (0.1 + 0.09) * x64.mean(_dims(x))  # two updates from zero
        torch.testing.assert_close(running_mean.double(), expected_mean, rtol=1e-5, atol=1e-6)
    finally:
        for kernel in kernels:
            runtime.BROKEN.discard(kernel)


def test_the_layout_test_of_the_passes():
    assert batch_norm_channels.is_rows_of_channels(torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last))
    assert batch_norm_channels.is_rows_of_channels(torch.empty(7, 3))
    assert batch_norm_channels.is_rows_of_channels(torch.empty(2, 1, 4, 5))  # one channel: any order
    assert not batch_norm_channels.is_rows_of_channels(torch.empty(2, 3, 4, 5))
    assert not batch_norm_channels.is_rows_of_channels(torch.empty(7, 6)[:, :3])  # rows with gaps
    assert not batch_norm_channels.is_rows_of_channels(torch.empty(3, 7).t())


class LinearBatchNorm(nn.Module):
    """BatchNorm1d on (N, C) rows: a 2-d input is rows of channels as it is."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(12, 10)
        self.bn = nn.BatchNorm1d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.linear(x))).sum(1)


def _steps_side_by_side(model: nn.Module, shape: tuple[int, ...], autocast: torch.dtype | None, tolerance: dict,
                        channels_last_input: bool = True, **options) -> None:
    def make_input() -> torch.Tensor:
        x = torch.randn(shape, device=DEVICE)
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and channels_last_input else x

    train_side_by_side(model.to(device=DEVICE), make_input, autocast=autocast, tolerance=tolerance, **options)


def _last(kind: str) -> metrics.GraphRecord:
    return [g for g in metrics.compiled_graphs if g.kind == kind][-1]


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
@pytest.mark.parametrize("affine", [True, False])
def test_a_residual_block_trains_as_eager_does(autocast, affine):
    """float32, and bf16 autocast (bf16 activations, float32 parameters and statistics: how
    ResNet-50's training benchmark runs)."""
    torch.manual_seed(0)
    tolerance = dict(rtol=1e-4, atol=1e-5) if autocast is None else dict(rtol=3e-2, atol=3e-2)
    _steps_side_by_side(Bottleneck(affine=affine), (4, 8, 9, 7), autocast, tolerance, channels_last="on")
    forward, backward = _last("forward"), _last("backward")
    if autocast is not None and DEVICE == "cpu":
        # the CPU trace gives bf16 saved statistics (CUDA's gives float32): both passes keep
        # ATen's ops, and the results above are still eager's
        assert STATISTICS not in forward.externs and GRADIENT_SUMS not in backward.externs
        return
    assert forward.externs.count(STATISTICS) == 3, forward.externs
    assert not any("batch_norm" in e for e in forward.externs if e != STATISTICS), forward.externs
    assert backward.externs.count(GRADIENT_SUMS) == 3, backward.externs
    assert "aten.native_batch_norm_backward.default" not in backward.externs, backward.externs
    # the normalisations run inside the kernels of their ReLU and residual add; so do the input
    # gradients (two kernels for them: bn2 and bn_down read the same dy, bn1 another)
    assert "aten.relu.default" in forward.fused_ops and "aten.sub.Tensor" in forward.fused_ops
    assert "aten.sub.Tensor" in backward.fused_ops and "aten.mul.Tensor" in backward.fused_ops


def test_batch_norm_1d_on_rows_trains_as_eager_does():
    torch.manual_seed(0)
    _steps_side_by_side(LinearBatchNorm(), (9, 12), None, dict(rtol=1e-4, atol=1e-5))
    assert _last("forward").externs.count(STATISTICS) == 1
    assert _last("backward").externs.count(GRADIENT_SUMS) == 1


def test_option_aten_keeps_atens_reductions():
    torch.manual_seed(0)
    _steps_side_by_side(Bottleneck(), (2, 8, 5, 5), None, dict(rtol=1e-4, atol=1e-5),
                        channels_last="on", batch_norm_reductions="aten")
    assert STATISTICS not in _last("forward").externs and GRADIENT_SUMS not in _last("backward").externs


def test_nchw_input_keeps_atens_backward():
    """Not rows of channels: the backward keeps ATen's op (on CUDA the forward takes ATen's
    statistics kernel, passes/batch_norm_split.py)."""
    torch.manual_seed(0)
    _steps_side_by_side(Bottleneck(), (2, 8, 5, 5), None, dict(rtol=1e-4, atol=1e-5), channels_last_input=False,
                        channels_last="off")
    assert STATISTICS not in _last("forward").externs
    assert "aten.native_batch_norm_backward.default" in _last("backward").externs
