"""Views in the generated wrapper written as reinterpretations of their base's traced layout
(``kernels/views.py``, issue 12): only where the base's layout is known or checked, right on
inputs of other layouts, and right when a kernel falls back to ATen."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import faults
from ait_dynamo.cache import load_module
from ait_dynamo.compile import ait_compile
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import runtime
from ait_dynamo.kernels.launch_site import LaunchSite
from ait_dynamo.kernels.views import reinterpret
from ait_dynamo.kernels.wrapper import generate_wrapper
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.pipeline import run_passes
from utils import check_compiled

needs_triton = pytest.mark.skipif(not runtime.triton_runs_on("cpu"), reason="Triton cannot run here (set TRITON_INTERPRET=1)")


@pytest.fixture(autouse=True)
def _forget_broken_kernels():
    runtime.BROKEN.clear()
    yield
    runtime.BROKEN.clear()


def _source(fn, *inputs, triton_runs: bool, tmp_path) -> tuple[str, object]:
    gm = make_fx(fn)(*inputs)
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    generated = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: triton_runs)
    return generated.source, generated


def _plain_body(source: str) -> str:
    start = source.index("    def call(args):")
    return source[start:source.index("    call._boxed_call = True", start)]


def _kernel_then_views(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    y = (x.sin() * 2).view(-1, 2)  # a view of a kernel's output, read by a GEMM and returned
    z = x.t() @ w  # a view of an input read by a GEMM
    parts = z.view(-1)[1::3].view(-1, 1).expand(-1, 4)  # views of a GEMM's result: an offset, a stride 0
    return y, y.t() @ y, parts, z.unsqueeze(0).transpose(1, 2)


def test_reinterpret_offsets_are_relative_to_the_base():
    base = torch.arange(30.0)[3:]  # a storage offset of 3
    view = reinterpret(base, (3, 4), (1, 3), 2)
    assert view.storage_offset() == 5
    torch.testing.assert_close(view, base.as_strided((3, 4), (1, 3), 5))


@needs_triton
def test_views_of_kernel_outputs_and_checked_values_are_reinterpreted(tmp_path):
    x, w = torch.randn(4, 6), torch.randn(4, 5)
    source, generated = _source(_kernel_then_views, x, w, triton_runs=True, tmp_path=tmp_path)
    body = _plain_body(source)
    assert body.count("_reinterpret(") >= 5, body
    assert ".view(" not in body and ".t()" not in body and ".expand(" not in body, body
    # the input and the GEMM's result are checked by the first call, not by later ones
    assert "x_1 = layouts.expect(x_1" in source and "layouts.expect(" not in body
    assert "mm = layouts.expect(mm," in source
    assert "slice_1 = _reinterpret(view_1, (10,), (3,), 1)" in body  # the offset of [1::3]
    module, _ = load_module(source, str(tmp_path))
    call = module.make_call(generated.constants)
    for _ in range(2):
        for got, want in zip(call([x, w]), _kernel_then_views(x, w)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(4, 6), (1, 6), (7, 6)], ids=["4x6", "1x6", "7x6"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_views_against_eager_forward_and_backward(shape, dtype):
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    w = torch.randn(shape[0], 5, dtype=dtype, requires_grad=True)
    check_compiled(_kernel_then_views, x, w, check_strides=True)


def test_views_of_a_sliced_and_transposed_input_against_eager():
    def reads_a_slice(a, b):
        return (*_kernel_then_views(a.t().contiguous(), b), a.t()[:, 1:3] * 3, a[2])

    storage = torch.randn(9, 8)
    x = storage[1:7].t()[:, :4]  # a storage offset of 8, transposed strides
    w = torch.randn(4, 5)
    torch._dynamo.reset()
    compiled = torch.compile(reads_a_slice, backend="ait")
    for _ in range(2):  # check_compiled would clone the input and lose its offset
        for got, want in zip(compiled(x, w), reads_a_slice(x, w)):
            torch.testing.assert_close(got, want)
    check_compiled(reads_a_slice, x.detach().requires_grad_(), w.requires_grad_())


def test_an_input_of_another_layout_than_traced_is_checked_then_copied(tmp_path):
    # ait_compile outside Dynamo: nothing guards the strides of the inputs it is called with
    x, w = torch.randn(4, 6), torch.randn(4, 5)
    gm = make_fx(_kernel_then_views)(x, w)
    compiled = ait_compile(gm, [x, w], cache_dir=str(tmp_path))
    transposed = torch.randn(6, 4).t()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            for got, want in zip(compiled([transposed, w]), _kernel_then_views(transposed.contiguous(), w)):
                torch.testing.assert_close(got, want)
    assert any("copied into the traced layout" in str(c.message) for c in caught)


def test_views_of_an_input_the_graph_writes_stay_tensor_methods(tmp_path):
    def writes_input(x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x.view(-1).t() * 2

    x = torch.randn(3, 4)
    source, _ = _source(writes_input, x, triton_runs=False, tmp_path=tmp_path)
    assert "_reinterpret(x_1" not in source and "_reinterpret(add" not in source
    check_compiled(writes_input, x, backward=False)


def test_a_view_to_another_dtype_is_not_reinterpreted(tmp_path):
    def bits(x: torch.Tensor) -> torch.Tensor:
        return (x * 2).view(torch.int32).view(-1) + 1

    source, _ = _source(bits, torch.randn(3, 4), triton_runs=False, tmp_path=tmp_path)
    assert "view = _aten_view_dtype(mul, torch.int32)" in source
    check_compiled(bits, torch.randn(3, 4), backward=False)


def test_a_view_with_several_results_is_a_tuple_of_reinterpretations(tmp_path):
    def rows(x: torch.Tensor) -> torch.Tensor:
        a, b, c = (x @ x.t()).unbind(0)
        return a * b + c

    x = torch.randn(3, 5)
    source, _ = _source(rows, x, triton_runs=False, tmp_path=tmp_path)
    body = _plain_body(source)
    assert "_aten_unbind" not in body and ".unbind(" not in body
    assert "unbind = (_reinterpret(mm, (3,), (1,), 0), _reinterpret(mm, (3,), (1,), 3), _reinterpret(mm, (3,), (1,), 6))" in body
    check_compiled(rows, x.requires_grad_())


def test_recover_lays_aten_results_out_as_traced():
    def fallback(x):
        return (x.t().contiguous().t(),)  # the right values, in another layout

    site = LaunchSite(None, fallback, "group", "pointwise", 1, xnumel=12, layouts=(((3, 4), (4, 1)),))
    x = torch.randn(3, 4)
    with pytest.warns(RuntimeWarning, match="launch failed"):
        out, = site.recover(RuntimeError("launch failed"), x)
    assert out.stride() == (4, 1)
    torch.testing.assert_close(out, x)


@needs_triton
@pytest.mark.parametrize("fault,options,message", [
    ("launch", {}, "injected launch failure"),  # LaunchSite.recover
    ("wrong_result", {"verify": True}, "verify"),  # the numerics guard retires the kernel
], ids=["launch_failure", "retired_by_verify"])
def test_views_after_a_kernel_that_falls_back_stay_right(fault, options, message):
    x = torch.randn(5, 6, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught, faults.inject(fault, kernel="kernel_0", graph="forward"):
        warnings.simplefilter("always")
        check_compiled(_kernel_then_views, x, w, options=options)
    assert any(message in str(c.message) and "kernel_0" in str(c.message) for c in caught)


@needs_triton
def test_an_output_written_into_a_dying_input_through_a_view_is_a_reinterpretation(tmp_path):
    def linear_relu(x, w):
        return ((x.view(6, 19) @ w).view(2, 3, 23).relu() * 2,)

    x, w = torch.randn(2, 3, 19), torch.randn(19, 23)
    source, generated = _source(linear_relu, x, w, triton_runs=True, tmp_path=tmp_path)
    assert "mul = _reinterpret(mm, (2, 3, 23), (69, 23, 1), 0)" in _plain_body(source)  # the product's buffer
    module, _ = load_module(source, str(tmp_path))
    call = module.make_call(generated.constants)
    for _ in range(2):
        torch.testing.assert_close(call([x, w])[0], linear_relu(x, w)[0])


def test_views_of_one_result_of_an_aten_call_with_several_are_reinterpreted(tmp_path):
    def row_max(x):
        values, indices = torch.max(x @ x.t(), dim=1)
        return values.unsqueeze(1), indices

    x = torch.randn(5, 4)
    source, _ = _source(row_max, x, triton_runs=False, tmp_path=tmp_path)
    assert "unsqueeze = _reinterpret(getitem, (5, 1), (1, 1), 0)" in _plain_body(source)
    assert "getitem = layouts.expect(getitem," in source  # checked by the first call
    check_compiled(row_max, x.requires_grad_())


def test_as_strided_counts_its_offset_from_the_storage_start():
    # as_strided's offset is absolute: on an input that is itself a slice, a reinterpretation
    # relative to the input's own offset would read other elements
    def absolute(x: torch.Tensor) -> torch.Tensor:
        return x.as_strided((2, 3), (1, 2), 1) * 2

    torch._dynamo.reset()
    compiled = torch.compile(absolute, backend="ait")
    x = torch.arange(12.0)[4:]  # storage offset 4 (check_compiled's clones would start at 0)
    torch.testing.assert_close(compiled(x), absolute(x))


def test_aten_results_are_laid_out_as_the_kernel_outputs_were():
    site = LaunchSite(None, lambda x: (x,), "group", "pointwise", 1, xnumel=12, layouts=(((3, 4), (1, 3)),))
    value = torch.randn(3, 4)
    out, = site.as_traced([value])
    assert out.stride() == (1, 3)
    torch.testing.assert_close(out, value)
    assert LaunchSite(None, lambda x: (x,), "group", "pointwise", 1, xnumel=12).as_traced([value])[0] is value


@needs_triton
def test_views_under_dynamic_shapes_stay_right():
    # symbolic sizes: nothing is reinterpreted where a size or stride is a symbol
    for rows in (4, 7):
        x = torch.randn(rows, 6, requires_grad=True)
        w = torch.randn(rows, 5, requires_grad=True)
        check_compiled(_kernel_then_views, x, w, dynamic=True)
