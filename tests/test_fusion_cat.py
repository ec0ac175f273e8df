"""``cat``, ``slice_backward`` and ``constant_pad_nd`` (padding and cropping) fused into pointwise kernels
(``passes/fusion_shifted.py``, ``kernels/codegen_shifted.py``): each input is loaded, masked,
over its slice of the dims, and consumers join the kernel; a negated input becomes a sign
(``passes/cancel_negations.py``); a constant is read where it lies (``passes/remove_noops.py``).
Llama's rotary embedding (``rotate_half``) was a negation kernel, an ATen ``cat`` and a kernel
per q and k; its backward two ATen ``slice_backward``s besides."""

from __future__ import annotations

import random

import pytest
import torch

from ait_dynamo import metrics
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# on the GPU machine these run on CUDA; on a CPU under the interpreter
pytestmark = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotary(q: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return q * cos + _rotate_half(q) * sin


def _graph(kinds: tuple[str, ...]):
    """The last compiled graph of one of ``kinds``."""
    return [g for g in metrics.compiled_graphs if g.kind in kinds][-1]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rotary_embedding_runs_its_cat_inside_the_kernel(dtype):
    torch.manual_seed(0)
    q = torch.randn(2, 3, 5, 10, device=DEVICE, dtype=dtype).transpose(1, 2).requires_grad_()  # non-contiguous
    cos, sin = torch.randn(5, 1, 10, device=DEVICE, dtype=dtype), torch.randn(5, 1, 10, device=DEVICE, dtype=dtype)
    check_compiled(_rotary, q, cos, sin)
    forward, backward = _graph(("forward",)), _graph(("backward",))
    assert "aten.cat.default" in forward.fused_ops and "aten.cat.default" not in forward.externs, forward.externs
    # the negated half becomes a sign computed in the cat's kernel: one kernel; the backward's
    # slice gradients (slice_backward) are masked loads too: no ATen call
    assert len(forward.kernels) == 1, forward.kernels
    assert backward.externs == [], backward.externs
    assert "aten.neg.default" not in forward.fused_ops + backward.fused_ops  # each a sign now


@pytest.mark.parametrize("shapes, dim", [
    (((4, 3, 6), (4, 5, 6)), 1), (((1, 7), (1, 1), (1, 9)), 1), (((3, 2), (4, 2), (1, 2), (2, 2)), 0),
    (((2, 33, 1), (2, 33, 1)), -1),
], ids=str)
def test_cat_shapes_forward_and_backward(shapes, dim):
    torch.manual_seed(0)
    tensors = [torch.randn(*s, device=DEVICE, requires_grad=True) for s in shapes]
    check_compiled(lambda *ts: (torch.cat(ts, dim).relu() * 3).sin(), *tensors)
    assert "aten.cat.default" in _graph(("forward",)).fused_ops


def test_cat_of_values_its_producer_kernel_computes_reads_them_back():
    """sin(x) and cos(x) run in one kernel; the cat (another index space) in the next."""
    x = torch.randn(6, 5, device=DEVICE)
    check_compiled(lambda x: torch.cat([x.sin(), x.cos()], 1) * 2, x, backward=False)
    graph = _graph(("inference", "forward"))
    assert len(graph.kernels) == 2 and "aten.cat.default" in graph.fused_ops, (graph.kernels, graph.fused_ops)


def test_cat_feeding_a_reduction_keeps_the_reduction_in_its_own_kernel():
    x, y = torch.randn(4, 6, device=DEVICE, requires_grad=True), torch.randn(4, 3, device=DEVICE, requires_grad=True)
    check_compiled(lambda x, y: torch.softmax(torch.cat([x, y], 1), dim=1), x, y)
    assert "aten.cat.default" in _graph(("forward",)).fused_ops


@pytest.mark.parametrize("case", ["promotes", "five_inputs"])
def test_cats_that_stay_in_aten_say_why(case):
    x = torch.randn(3, 4, device=DEVICE)
    if case == "promotes":
        fn, args = (lambda x, i: torch.cat([x, i], 1) * 2), (x, torch.ones(3, 2, device=DEVICE, dtype=torch.int32))
    else:
        fn, args = (lambda x: torch.cat([x, x + 1, x + 2, x + 3, x + 4], 0) * 2), (x,)
    check_compiled(fn, *args, backward=False)
    graph = _graph(("inference", "forward"))
    assert "aten.cat.default" in graph.externs
    assert any("cat" in reason for reason in graph.refused.values()), graph.refused


def test_cat_with_an_empty_input_is_a_copy_of_the_other():
    """``passes/remove_noops.py`` turns it into the other input (or a fused clone) first."""
    fn = lambda x, e: torch.cat([x, e], 0) * 2  # noqa: E731
    check_compiled(fn, torch.randn(3, 4, device=DEVICE), torch.randn(0, 4, device=DEVICE), backward=False)
    graph = _graph(("inference", "forward"))
    assert "aten.cat.default" not in graph.externs + graph.fused_ops, (graph.externs, graph.fused_ops)


def _slice_gradients(x: torch.Tensor) -> torch.Tensor:
    return x[:, 1:4].sin() * 2 + x[:, :2].sum() + x[:, -3:].cos()


def test_slice_gradients_are_masked_loads_in_one_kernel():
    """The backward of slicing (``slice_backward``: zeros with the gradient over the slice), one
    of the gradients broadcast from a sum (strides 0): no ATen call."""
    x = torch.randn(4, 6, 3, device=DEVICE, requires_grad=True)
    check_compiled(_slice_gradients, x)
    backward = _graph(("backward",))
    assert backward.externs == [] and backward.fused_ops.count("aten.slice_backward.default") == 3, (
        backward.externs, backward.fused_ops)


def test_negated_cat_input_becomes_a_sign_in_the_cat_kernel():
    x = torch.randn(4, 6, 3, device=DEVICE, requires_grad=True)
    check_compiled(lambda x: torch.cat([x, -x.sin(), -x], 1) * 2, x)
    forward = _graph(("forward",))
    assert "aten.neg.default" not in forward.fused_ops and "aten.cat.default" in forward.fused_ops, forward.fused_ops


@pytest.mark.parametrize("pad, value", [((0, 7), 0.0), ((1, 2, 0, 3), -1.5), ((2, 0, 1, 1, 0, 2), float("-inf")),
                                        ((0, 0, 2, 0), 0.0)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_constant_pad_is_a_masked_load(pad, value, dtype):
    """``constant_pad_nd`` (GEMM padding pads a weight by N's remainder, as GPT-2's LM head):
    the input where it lies, the fill elsewhere, its consumer in the same kernel."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, device=DEVICE, dtype=dtype).transpose(0, 2).requires_grad_()  # non-contiguous
    check_compiled(lambda x: (torch.nn.functional.pad(x, pad, value=value) * 2).exp(), x)
    forward = _graph(("forward",))
    assert "aten.constant_pad_nd.default" in forward.fused_ops and len(forward.kernels) == 1, (
        forward.kernels, forward.externs)


@pytest.mark.parametrize("pad", [(-1, 2), (-1, -2, 1, -1), (0, 0, -2, -1)], ids=str)
def test_negative_padding_crops_in_the_kernel(pad):
    """A negative amount crops, and the gradient of a pad is a crop: the load is shifted the other
    way and needs no bound. (0, 0, -2, -1) crops 4 rows to the third alone, a size-1 dim whose
    one index reads row 2."""
    x = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    check_compiled(lambda x: torch.nn.functional.pad(x, pad, value=3.0) * 2, x)
    forward, backward = _graph(("forward",)), _graph(("backward",))
    assert "aten.constant_pad_nd.default" in forward.fused_ops and forward.externs == [], forward.externs
    assert "aten.constant_pad_nd.default" in backward.fused_ops and backward.externs == [], backward.externs


@pytest.mark.parametrize("pad", [(-1, 1), (2, -2, 0, 0), (0, 0, -1, 1)], ids=str)
def test_a_pad_that_keeps_the_shape_but_shifts_the_values_is_not_dropped(pad):
    """``remove_noops`` took every same-shape ``constant_pad_nd`` for a zero pad: (-1, 1) crops
    one element and pads one, a shift of the values, and came out as its input unchanged."""
    x = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    check_compiled(lambda x: torch.nn.functional.pad(x, pad, value=2.5) * 3, x)
    forward = _graph(("forward",))
    assert "aten.constant_pad_nd.default" in forward.fused_ops, (forward.fused_ops, forward.externs)


@pytest.mark.parametrize("pad", [(1, -3), (-3, 1), (0, 0, 1, -4)], ids=str)
def test_padding_and_cropping_a_dim_to_one_element_stays_in_aten(pad):
    """Its one element may be the fill (pad 1 before, crop the rest): a size-1 dim has no index in
    the kernel to bound, and reading the input there was a wrong value before this refusal."""
    x = torch.randn(4, 3, device=DEVICE, requires_grad=True)
    check_compiled(lambda x: torch.nn.functional.pad(x, pad, value=7.0) * 2, x)
    forward = _graph(("forward",))
    assert "aten.constant_pad_nd.default" in forward.externs, forward.fused_ops
    assert any("one element" in reason for reason in forward.refused.values()), forward.refused


def _random_pad(seed: int) -> tuple[list[int], tuple[int, ...], float]:
    """A shape of small sizes (1 included) and a pad list mixing pads, crops and shifts that
    leaves every dim at least one element."""
    rng = random.Random(seed)
    shape = [rng.choice([1, 2, 3, 5, 7]) for _ in range(rng.randint(1, 4))]
    amounts: list[int] = []
    for k in range(rng.randint(1, len(shape))):
        size = shape[-1 - k]
        before, after = rng.randint(-3, 3), rng.randint(-3, 3)
        while size + before + after < 1 or size + before < 0 or size + after < 0:  # what eager takes
            before, after = rng.randint(-3, 3), rng.randint(-3, 3)
        amounts += [before, after]
    return shape, tuple(amounts), rng.choice([0.0, -1.5, 2.0])


@pytest.mark.parametrize("seed", range(24))
def test_random_pads_and_crops(seed):
    """Pads, crops and both on one dim, over size-1 dims too: the probe that found the dropped
    same-shape pad and the dim padded and cropped to one element ran 700 of these."""
    shape, amounts, value = _random_pad(seed)
    x = torch.randn(*shape, device=DEVICE, requires_grad=True)
    check_compiled(lambda x: (torch.nn.functional.pad(x, amounts, value=value) * 2).sin(), x)


def test_a_constant_is_read_where_it_lies_not_copied_each_call():
    """``torch.tensor`` in traced code becomes ``lift_fresh_copy(constant)``: no copy per call
    (GPT-2's attention mask value was one)."""
    def fn(x):
        return torch.where(x > 0, x, torch.tensor(-3.0, device=x.device)) * 2

    check_compiled(fn, torch.randn(5, 4, device=DEVICE), backward=False)
    graph = _graph(("inference", "forward"))
    assert "aten.lift_fresh_copy.default" not in graph.externs + graph.fused_ops, graph.externs
    assert len(graph.kernels) == 1, graph.kernels
