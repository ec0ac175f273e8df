"""Training batch norm's reductions as our Triton kernels (kernels/batch_norm_channels.py) and the
passes that call them (passes/batch_norm_split.py forward, passes/batch_norm_backward_split.py
backward): each kernel against a float64 reference, the fallbacks, and whole training steps
against eager, with the structure the passes promise."""

from __future__ import annotations

import warnings
from typing import Callable

import pytest
import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import batch_norm_channels, runtime
from ait_dynamo.passes.batch_norm_backward_split import split_training_batch_norm_backward
from ait_dynamo.passes.constant_fold import fold_constants
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


@pytest.mark.parametrize("threshold", [0.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,multiprocessors", [SHAPES[0], SHAPES[1], SHAPES[2], SHAPES[5]])
def test_a_folded_relu_backward_gives_the_bits_of_its_written_result(shape, multiprocessors, dtype, threshold):
    """``gate`` folds ``where(gate <= threshold, 0, dy)`` into the reduction: every result must be
    the one the kernel gives for that where written out, bit for bit (the kernel loads either the
    same value or zero). The gate holds values equal to the threshold (``<=`` zeroes them) and a
    NaN (no comparison holds: the gradient passes, as in ATen)."""
    torch.manual_seed(2)
    x = _rows_of_channels(shape, dtype, scale=2.0, offset=1.0)
    dy = _rows_of_channels(shape, dtype)
    gate = _rows_of_channels(shape, dtype)
    flat = gate.permute(0, *range(2, gate.dim()), 1).reshape(-1)  # a view of gate's storage, in memory order
    flat[::5] = threshold
    flat[3] = float("nan")
    weight = torch.randn(shape[1], device=DEVICE)
    grid = _grid(x, multiprocessors)
    mean, invstd = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
    written = torch.where(gate <= threshold, 0.0, dy)
    expected = batch_norm_channels.channel_gradient_sums(written, x, mean, invstd, weight, grid)
    folded = batch_norm_channels.channel_gradient_sums(dy, x, mean, invstd, weight, grid, gate, threshold)
    for got, want in zip(folded, expected):
        assert torch.equal(got, want)


def test_a_folded_relu_backward_falls_back_with_its_gate(monkeypatch):
    monkeypatch.setattr(runtime, "launch", lambda *a, **k: pytest.fail("the fallback launches nothing"))
    monkeypatch.setattr(batch_norm_channels, "_BOUND", {})
    x = _rows_of_channels((3, 6, 5, 4), torch.float32).contiguous()  # not rows of channels: ATen ops
    dy, gate = torch.randn_like(x), torch.randn_like(x)
    weight = torch.randn(6, device=DEVICE)
    grid = _grid(x)
    mean, invstd = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
    got = batch_norm_channels.channel_gradient_sums(dy, x, mean, invstd, weight, grid, gate, 0.0)
    expected_weight, expected_bias = _reference_backward(x, torch.where(gate <= 0, 0.0, dy), weight)[1:]
    torch.testing.assert_close(got[3].double(), expected_weight, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[4].double(), expected_bias, rtol=1e-5, atol=1e-5)


def _backward_graph(relu_backward: Callable, dtype: torch.dtype = torch.float32, second_reader: bool = False,
                    threshold: float = 0.0) -> fx.GraphModule:
    """A batch norm's backward reading a ReLU's backward, traced on fake tensors as AOTAutograd hands
    it over (constants folded)."""
    aten = torch.ops.aten

    def backward(grad, gate, x, mean, invstd, weight):
        dy = relu_backward(grad, gate, threshold)
        results = aten.native_batch_norm_backward.default(dy, x, weight, None, None, mean, invstd, True, 1e-5,
                                                          [True, True, True])
        return (*results, dy * 2) if second_reader else results

    def rows(*shape: int) -> torch.Tensor:
        return torch.randn(shape, dtype=dtype, device=DEVICE).contiguous(memory_format=torch.channels_last)

    gm = make_fx(backward, tracing_mode="fake")(rows(2, 4, 3, 3), rows(2, 4, 3, 3), rows(2, 4, 3, 3),
                                               *(torch.rand(4, device=DEVICE) for _ in range(3)))
    return fold_constants(gm, AitConfig.create())


def _decomposed(grad, gate, threshold):  # threshold_backward as AOTAutograd's decomposition gives it
    aten = torch.ops.aten
    return aten.where.self(aten.le.Scalar(gate, threshold), torch.zeros((), dtype=grad.dtype, device=grad.device), grad)


def _gates(gm: fx.GraphModule) -> list:
    """The (gate, threshold) arguments of each gradient-sums node."""
    return [n.args[6:] for n in gm.graph.nodes if n.target is batch_norm_channels.channel_gradient_sums]


@pytest.mark.parametrize("relu_backward", [torch.ops.aten.threshold_backward.default, _decomposed])
def test_the_pass_folds_a_relu_backward_read_by_the_batch_norm_alone(relu_backward):
    gm = split_training_batch_norm_backward(_backward_graph(relu_backward), AitConfig.create())
    (gate,) = _gates(gm)
    assert gate[0].name.startswith("gate") and gate[1] == 0.0, gate
    sums = next(n for n in gm.graph.nodes if n.target is batch_norm_channels.channel_gradient_sums)
    assert sums.args[0].name.startswith("grad"), sums.args  # the ReLU's input gradient, not its result
    # the ReLU's backward stays in the graph for the input gradient's pointwise ops alone
    relu = next(n for n in gm.graph.nodes if n.target in (torch.ops.aten.threshold_backward.default,
                                                           torch.ops.aten.where.self))
    assert sums not in relu.users and relu.users


def test_the_pass_keeps_a_relu_backward_that_is_read_elsewhere_or_inexact():
    config = AitConfig.create()
    assert _gates(split_training_batch_norm_backward(_backward_graph(_decomposed, second_reader=True), config)) == [()]
    # 0.1 is not a bfloat16: ATen compares in bf16, our kernel in float32
    inexact = _backward_graph(_decomposed, torch.bfloat16, threshold=0.1)
    assert _gates(split_training_batch_norm_backward(inexact, config)) == [()]
    exact = _backward_graph(_decomposed, torch.bfloat16, threshold=0.5)
    assert [g[1] for g in _gates(split_training_batch_norm_backward(exact, config))] == [0.5]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_compiled_backward_of_half_activations_reads_them_uncast(dtype):
    """ResNet's backward under autocast: half ``dy`` and ``x``, float32 statistics. Compiled (an
    inference graph of the backward's ops, constants folded inside Dynamo's fake mode), the ReLU's
    backward folds into the sums and the input gradient is one kernel that reads the half values
    and casts only its result: no float32 copy of ``dy`` is written."""
    aten = torch.ops.aten

    def backward(grad, gate, x, mean, invstd, weight):
        dy = torch.where(gate <= 0, 0.0, grad)
        return aten.native_batch_norm_backward.default(dy, x, weight, None, None, mean, invstd, True, 1e-5,
                                                       [True, True, True])

    torch.manual_seed(3)
    shape = (2, 6, 5, 3)
    args = (_rows_of_channels(shape, dtype), _rows_of_channels(shape, dtype), _rows_of_channels(shape, dtype),
            torch.randn(6, device=DEVICE), torch.rand(6, device=DEVICE) + 0.5, torch.randn(6, device=DEVICE).to(dtype))
    metrics.reset()
    with torch.no_grad():
        got = torch.compile(backward, backend="ait")(*args)
        expected = backward(*(a.double() for a in args))  # in float64: ATen's CPU op wants one dtype
    graph = metrics.compiled_graphs[-1]
    assert graph.fallback_reason is None and graph.externs == [GRADIENT_SUMS], (graph.fallback_reason, graph.externs)
    assert len(graph.kernels) == 1 and graph.fused_ops.count("aten._to_copy.default") == 1, graph.fused_ops
    assert "aten.le.Scalar" in graph.fused_ops
    for value, reference in zip(got, expected):
        assert value.dtype == dtype and value.stride() == reference.stride()
        # one rounding to the half type, of a float32 result
        torch.testing.assert_close(value.double(), reference, rtol=2 ** -7, atol=1e-3 * reference.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels", [1, 3, 5, 8, 130])
def test_result_rows_start_16_byte_aligned(channels, dtype):
    """The kernels are bound for aligned pointers and the calls check only the caller's inputs:
    the rows they write into must be aligned for any channel count."""
    for row in batch_norm_channels._rows(3, channels, dtype, torch.device(DEVICE)).unbind(0):
        assert row.data_ptr() % 16 == 0 and row.shape == (channels,) and row.is_contiguous()


def _check_statistics_and_gradients(x: torch.Tensor, stats: tuple, dy: torch.Tensor, weight: torch.Tensor,
                                    sums: tuple) -> None:
    mean, invstd = stats
    torch.testing.assert_close(mean.double(), x.double().mean(_dims(x)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(invstd.double(), (x.double().var(_dims(x), unbiased=False) + 1e-5).rsqrt(),
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sums[3].double(), _reference_backward(x, dy, weight)[1], rtol=1e-5, atol=1e-5)


def test_layers_share_one_scratch_but_not_results():
    """Two layers, one after the other, take their tickets and partials from one scratch set:
    each must still get its own statistics and gradients."""
    torch.manual_seed(4)
    a, b = (_rows_of_channels((4, 6, 5, 5), torch.float32, scale=s, offset=o) for s, o in ((1.0, 0.0), (3.0, 2.0)))
    grid = _grid(a)
    stats = [batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid) for x in (a, b)]
    weight = torch.randn(6, device=DEVICE)
    dys = [torch.randn_like(a), torch.randn_like(b)]
    sums = [batch_norm_channels.channel_gradient_sums(dy, x, m, i, weight, grid) for dy, x, (m, i) in zip(dys, (a, b), stats)]
    for x, dy, stat, results in zip((a, b), dys, stats, sums):
        _check_statistics_and_gradients(x, stat, dy, weight, results)


def test_one_scratch_per_stream_grown_for_the_largest_layer(monkeypatch):
    """Layers of different shapes share the stream's scratch: it grows to the largest need and
    serves the smaller layers after; every layer's results stay right. A small set outgrown
    goes back to the allocator, unless a captured CUDA graph addresses it."""
    monkeypatch.setattr(batch_norm_channels, "_SCRATCH", {})
    monkeypatch.setattr(batch_norm_channels, "_CAPTURED_AND_OUTGROWN", [])
    torch.manual_seed(6)
    shapes = [(2, 3, 4, 4), (4, 70, 5, 7), (2, 3, 4, 4), (3, 9, 6, 6)]
    first = None
    for number, shape in enumerate(shapes):
        x = _rows_of_channels(shape, torch.float32, scale=2.0, offset=1.0)
        grid = _grid(x)
        weight, dy = torch.randn(shape[1], device=DEVICE), torch.randn_like(x)
        stats = batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid)
        sums = batch_norm_channels.channel_gradient_sums(dy, x, *stats, weight, grid)
        _check_statistics_and_gradients(x, stats, dy, weight, sums)
        (scratch,) = batch_norm_channels._SCRATCH.values()
        layout = batch_norm_channels.ChannelGrid(*grid)
        assert scratch.counters.numel() >= -(-layout.channels // layout.block_c)
        assert scratch.partials.numel() >= (2 * layout.splits + 1) * layout.channels
        if number == 0:
            first = scratch
            scratch.captured = True  # as if a graph had captured the first layer's kernels
    assert batch_norm_channels._CAPTURED_AND_OUTGROWN == [first]
    assert scratch.counters.sum().item() == 0  # every finishing program reset its ticket


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="needs CUDA graphs")
def test_a_captured_graph_keeps_its_scratch_after_a_larger_layer_grows_the_streams(monkeypatch):
    """A graph captures a small layer's statistics; a larger layer then outgrows the scratch it
    captured. Replays must still write into memory no one else was given: their results stay
    right while other tensors fill the allocator."""
    monkeypatch.setattr(batch_norm_channels, "_SCRATCH", {})
    monkeypatch.setattr(batch_norm_channels, "_CAPTURED_AND_OUTGROWN", [])
    torch.manual_seed(7)
    small = _rows_of_channels((4, 6, 9, 9), torch.float32)
    grid = _grid(small, multiprocessors=132)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        batch_norm_channels.channel_statistics(small, None, None, 0.1, 1e-5, grid)  # compiles, binds
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            mean, invstd = batch_norm_channels.channel_statistics(small, None, None, 0.1, 1e-5, grid)
        large = _rows_of_channels((8, 256, 20, 20), torch.float32)
        batch_norm_channels.channel_statistics(large, None, None, 0.1, 1e-5, _grid(large, multiprocessors=132))
        stream.synchronize()
    assert len(batch_norm_channels._CAPTURED_AND_OUTGROWN) == 1
    filler = [torch.full((1 << 16,), float(i), device=DEVICE) for i in range(64)]  # takes freed blocks
    for scale in (1.0, 5.0):
        small.mul_(scale)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(mean.double(), small.double().mean(_dims(small)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(invstd.double(), (small.double().var(_dims(small), unbiased=False) + 1e-5).rsqrt(),
                                   rtol=1e-5, atol=1e-6)
    assert all(f.eq(i).all() for i, f in enumerate(filler))


@pytest.mark.parametrize("kernel", ["statistics", "gradient"])
def test_a_misaligned_input_is_not_read_by_the_aligned_binary(kernel):
    """After an aligned call has bound the compiled launcher, an input 4 bytes off alignment must
    take the generic launch (compiled without the 16-byte assumption) and give the same values."""
    torch.manual_seed(5)
    shape, channels = (2, 7, 3, 5), 7
    aligned = _rows_of_channels(shape, torch.float32)
    storage = torch.empty(aligned.numel() + 1, device=DEVICE)
    misaligned = storage[1:].view(2, 3, 5, 7).permute(0, 3, 1, 2)  # rows of channels, 4 bytes in
    misaligned.copy_(aligned)
    assert misaligned.data_ptr() % 16 and batch_norm_channels.is_rows_of_channels(misaligned)
    grid = _grid(aligned)
    weight = torch.randn(channels, device=DEVICE)
    if kernel == "statistics":
        results = [batch_norm_channels.channel_statistics(x, None, None, 0.1, 1e-5, grid) for x in (aligned, misaligned)]
    else:
        mean, invstd = batch_norm_channels.channel_statistics(aligned, None, None, 0.1, 1e-5, grid)
        dy = torch.randn_like(aligned)
        results = [batch_norm_channels.channel_gradient_sums(d, aligned, mean, invstd, weight, grid)
                   for d in (dy, misaligned.copy_(dy))]
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


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
    if autocast is None:
        # bn1's ReLU backward is folded into its gradient sums and computed again inside bn1's
        # input-gradient kernel: no kernel of its own (5 kernels before the fold)
        assert len(backward.kernels) == 4, backward.kernels


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
