"""Graphs compiled once for every size (``dynamic=True``) get the kernels of a static compile.

- Shifted loads: ``max_pool2d``, ``constant_pad_nd``, ``cat`` along a symbolic dim and
  ``slice_backward`` with symbolic bounds. Their bounds, shifts and slice ends are kernel arguments
  the wrapper computes from the inputs' sizes (``kernels/codegen_shifted.py``). Before, each stayed
  an ATen call, and nothing after a dynamic ResNet's stem pool was fused with it.
- A module's float attributes, which Dynamo passes as float64 0-d inputs under ``dynamic=True``:
  their cast to float32 is read inside the kernel that uses it, not an ATen call before it.
- Symbolic ints as operands (``x / x.shape[-1]``; the training max pool's window offsets divide by
  the image width): computed in the kernel from the size arguments (``SizeScalar``).
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import assert_close_to_reference, dynamo_graphs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)"),
              pytest.mark.usefixtures("generated_kernels_must_not_fail")]


def _run_over_sizes(fn: Callable[..., torch.Tensor], inputs: list[tuple[torch.Tensor, ...]], backward: bool) -> None:
    """Compile ``fn`` once with dynamic shapes; for each input tuple compare its output (and the
    inputs' gradients) with eager's and float64's."""
    frames = dynamo_graphs(fn, inputs)
    compiled = torch.compile(fn, backend="ait", dynamic=True)
    for args in inputs:
        eager_args = [a.detach().clone().requires_grad_(backward) for a in args]
        compiled_args = [a.detach().clone().requires_grad_(backward) for a in args]
        reference_args = [a.detach().double().requires_grad_(backward) for a in args]
        with torch.set_grad_enabled(backward):
            expected, actual, reference = fn(*eager_args), compiled(*compiled_args), fn(*reference_args)
        assert_close_to_reference(actual, expected, reference, f"output at {tuple(args[0].shape)}")
        if backward:
            grad = torch.randn_like(expected)
            got = torch.autograd.grad(actual, compiled_args, grad)
            want = torch.autograd.grad(expected, eager_args, grad)
            exact = torch.autograd.grad(reference, reference_args, grad.double())
            assert_close_to_reference(list(got), list(want), list(exact), f"grad at {tuple(args[0].shape)}")
    for graph in metrics.compiled_graphs:
        assert graph.fallback_reason is None, graph.fallback_reason
    # one graph (a forward and a backward when training) served every size that one Dynamo graph
    # served: ait adds no guard of its own (Dynamo's may split the sizes: utils.dynamo_graphs)
    assert metrics.graphs_compiled == frames * (2 if backward else 1), [g.name for g in metrics.compiled_graphs]


def _graph(kind: str):
    return next(g for g in metrics.compiled_graphs if g.kind == kind)


def _images(*sizes: tuple[int, ...], dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return [(torch.randn(*size, device=DEVICE, dtype=dtype),) for size in sizes]


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [
    (3, 2, 1, 1, False),  # ResNet's stem pool
    (2, 2, 0, 1, True),   # ceil mode: the last window hangs over the edge at odd sizes
    (3, 1, 1, 2, False),  # dilation
], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_max_pool_over_symbolic_image_sizes_is_one_kernel_with_its_consumers(kernel, stride, padding, dilation,
                                                                           ceil_mode, dtype):
    def fn(x):
        return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode).relu() * 3 + 1

    _run_over_sizes(fn, _images((2, 3, 9, 11), (2, 3, 12, 12), (3, 2, 17, 6), dtype=dtype), backward=False)
    graph = _graph("inference")
    assert "aten.max_pool2d.default" in graph.fused_ops and not [op for op in graph.externs if "pool" in op], (
        graph.fused_ops, graph.externs)
    assert len(graph.kernels) == 1, graph.kernels


# Pads written out in each function: an int the function closes over becomes a symbolic input
# under dynamic=True, and a pad that may be negative (a crop) stays ATen's.
_PADS = {
    "before_and_after": lambda x: F.pad(x, (1, 2, 0, 3), value=-1.5),
    "after_only": lambda x: F.pad(x, (0, 4)),
    "minus_infinity": lambda x: F.pad(x, (2, 0, 1, 1), value=float("-inf")),
    "crop_and_pad": lambda x: F.pad(x, (-1, 2, 0, -1), value=0.5),  # a size s >= 2 cropped by 1 keeps a row
}


@pytest.mark.parametrize("case", sorted(_PADS))
def test_constant_pad_of_symbolic_sizes_is_a_masked_load(case):
    pad = _PADS[case]

    def fn(x):
        return (pad(x.sin()) * 2).exp()

    _run_over_sizes(fn, _images((2, 3, 9, 11), (2, 3, 12, 5), (3, 4, 6, 17)), backward=True)
    forward = _graph("forward")
    assert "aten.constant_pad_nd.default" in forward.fused_ops, (forward.fused_ops, forward.refused)
    assert forward.externs == [], forward.externs


def test_cat_along_a_symbolic_dim_and_its_slice_gradients_are_kernels():
    """The cat's pieces end at symbolic offsets (s, 2s - 1, 3s - 1); its backward slices the
    gradient at the same offsets: masked loads, no ATen call in either graph."""

    def fn(x, y):
        return torch.cat([x.sin(), x[..., 1:] * 2, y], -1).exp()

    torch.manual_seed(0)
    inputs = [(torch.randn(2, 3, size, device=DEVICE), torch.randn(2, 3, size, device=DEVICE)) for size in (9, 12, 5)]
    _run_over_sizes(fn, inputs, backward=True)
    forward, backward = _graph("forward"), _graph("backward")
    assert "aten.cat.default" in forward.fused_ops and "aten.cat.default" not in forward.externs, forward.externs
    assert "aten.slice_backward.default" in backward.fused_ops, backward.refused
    # left to ATen: views and reading a size, no data
    assert not [op for op in forward.externs + backward.externs if op not in ("aten.slice.Tensor", "aten.sym_size.int")], (
        forward.externs, backward.externs)


def test_a_slice_to_a_symbolic_end_has_a_fused_gradient():
    """``x[..., : x.shape[-1] - 2]``: the slice's end is a node computing s - 2."""

    def fn(x):
        return torch.cat([x[..., : x.shape[-1] - 2].sin(), x], -1) * 2

    _run_over_sizes(fn, _images((3, 9), (4, 12), (2, 5)), backward=True)
    backward = _graph("backward")
    assert "aten.slice_backward.default" in backward.fused_ops, backward.refused


def test_the_gradient_of_a_slice_keeps_one_slice_backward_as_over_static_sizes():
    """Over a symbolic size, tracing ``x[:, :, 1:-1]`` records a ``slice_backward`` for every
    leading dim too, each over the whole dim: ``passes/remove_noops.py`` drops them (the last, a
    graph output, as a clone that joins a kernel). The backward has two kernels, as it has over
    static sizes (the product, then the masked slice)."""

    def fn(x):
        return x[:, :, 1:-1].sin()

    _run_over_sizes(fn, _images((2, 3, 9, 11), (3, 2, 12, 5)), backward=True)
    backward = _graph("backward")
    assert backward.fused_ops.count("aten.slice_backward.default") == 1, backward.fused_ops
    assert backward.externs == [] and len(backward.kernels) == 2, (backward.externs, backward.kernels)


class _RMSNorm(torch.nn.Module):
    """Llama's RMSNorm: ``eps`` a float attribute, as in Hugging Face's models."""

    def __init__(self, width: int):
        super().__init__()
        self.eps, self.scale = 1e-6, 0.5
        self.weight = torch.nn.Parameter(torch.randn(width))

    def forward(self, x):
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed * self.scale


def test_float_attributes_passed_as_float64_inputs_are_cast_inside_the_kernel():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _RMSNorm(24).to(DEVICE)
    reference = _RMSNorm(24).to(DEVICE).double()
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="ait", dynamic=True)
    for rows in (5, 9, 17):
        x = torch.randn(rows, 24, device=DEVICE)
        got, want, exact = compiled(x.requires_grad_()), model(x), reference(x.double())
        assert_close_to_reference(got, want, exact, f"output at {rows} rows")
        grad = torch.randn_like(want)
        got_grads = torch.autograd.grad(got, [x, *compiled.parameters()], grad)
        want_grads = torch.autograd.grad(want, [x, *model.parameters()], grad)
        x64 = x.detach().double().requires_grad_()
        exact_grads = torch.autograd.grad(reference(x64), [x64, *reference.parameters()], grad.double())
        assert_close_to_reference(list(got_grads), list(want_grads), list(exact_grads), f"grads at {rows} rows")
    assert metrics.graphs_compiled == 2, [g.name for g in metrics.compiled_graphs]
    forward = _graph("forward")
    placeholders_f64 = [name for name, reason in forward.refused.items() if "float64" in reason]
    assert not placeholders_f64 and "prims.convert_element_type.default" not in forward.externs, (
        forward.externs, forward.refused)
    assert "prims.convert_element_type.default" in forward.fused_ops, forward.fused_ops
    assert len(forward.kernels) == 1, forward.kernels


def _size_arithmetic(x, i):
    """Sizes as operands: a float divided by one, an int64 tensor floor-divided by one (negative
    values included: floor, not truncation) and a product and a sum of them."""
    scaled = x / x.shape[-1] * x.shape[0] + x.shape[1]
    return scaled, torch.div(i, x.shape[-1], rounding_mode="floor") * x.shape[-1] - i


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_symbolic_sizes_as_operands_are_read_inside_the_kernel(dtype):
    torch._dynamo.reset()
    torch.manual_seed(0)
    compiled = torch.compile(_size_arithmetic, backend="ait", dynamic=True)
    for rows, cols in ((5, 7), (9, 12), (3, 17)):
        x = torch.randn(rows, cols, device=DEVICE, dtype=dtype)
        i = torch.randint(-50, 50, (rows, cols), device=DEVICE)
        got, want, exact = compiled(x, i), _size_arithmetic(x, i), _size_arithmetic(x.double(), i)
        assert_close_to_reference(list(got), list(want), list(exact), f"outputs at {rows}x{cols}")
    assert metrics.graphs_compiled == 1, [g.name for g in metrics.compiled_graphs]
    graph = _graph("inference")
    assert not [op for op in graph.externs if not op.startswith("aten.sym_size")], (graph.externs, graph.refused)
    assert "aten.div.Tensor_mode" in graph.fused_ops, graph.fused_ops


def test_max_pool_training_offsets_over_a_dynamic_width_are_one_kernel():
    """The training pool saves its window offsets (int8) computed from the indices: a floor
    division and a product by the image width, a symbolic int under dynamic shapes."""

    def fn(x):
        return F.max_pool2d(x, 3, 2, 1).relu() + 1

    _run_over_sizes(fn, _images((2, 3, 9, 11), (2, 3, 12, 12), (3, 2, 17, 6)), backward=True)
    forward = _graph("forward")
    assert not [op for op in forward.externs if "div" in op or "mul" in op], forward.externs
    assert len(forward.kernels) == 1, forward.kernels


def test_a_convolution_bias_over_symbolic_channels_is_compiled():
    """The convolution's bias, split off to join the kernel after it (``passes/conv_bias.py``), is
    viewed per channel; over a symbolic channel count the view wrote a raw SymInt into the graph,
    which the wrapper cannot print, and the whole graph ran as AOTAutograd gave it (the OpInfo
    sweep with ``--dynamic`` found it: conv1d, conv_transpose1d/2d/3d). The view says -1 now."""
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4, 3, device=DEVICE), torch.randn(4, device=DEVICE)

    def fn(x, w, b):
        return F.conv_transpose1d(x, w, b, stride=2).relu()

    inputs = [(torch.randn(2, 3, length, device=DEVICE), weight, bias) for length in (7, 12, 5)]
    _run_over_sizes(fn, inputs, backward=True)


def _padded(before: int, after: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x):
        return F.pad(x.transpose(2, 3) * 1.5, (before, after), value=0.5).sin() * 2

    return fn


def test_an_aten_result_whose_layout_changes_with_the_sizes_is_checked_on_every_call():
    """The pads, ints the function closes over, are symbolic under ``dynamic=True``, and one graph
    serves them all. ATen's ``constant_pad_nd`` returns a clone in its input's (transposed) layout
    where every pad is at most 0, and a contiguous tensor otherwise, as the trace has it; the
    kernel after it read the transposed clone as contiguous (wrong values; found by
    ``tests/test_random_views.py``). Such results are now checked, and copied into the traced
    layout where they differ, on every call: the first pads here give the traced layout."""
    torch._dynamo.reset()
    x = torch.randn(1, 6, 2, 6, device=DEVICE)
    for before, after in ((1, 1), (0, 0), (2, 0), (0, 0)):
        fn = _padded(before, after)
        got = torch.compile(fn, backend="ait", dynamic=True)(x)
        torch.testing.assert_close(got, fn(x))
    assert metrics.graphs_compiled == 1, [g.name for g in metrics.compiled_graphs]
