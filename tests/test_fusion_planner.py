"""Fusion planner and generated kernels: kernel counts, reductions, row patterns, odd shapes,
strides, dynamic shapes, the duplicated-output backward, a golden kernel, ATen fallback."""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.compile import compile_graph
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled, dynamo_graphs, needs_cpu_triton

pytestmark = pytest.mark.usefixtures("generated_kernels_must_not_fail")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
needs_triton = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")
GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "pointwise_kernel.py.txt")


def _kernels() -> list[int]:
    return [len(g.kernels) for g in metrics.compiled_graphs]


def _no_fallback() -> None:
    for graph in metrics.compiled_graphs:
        assert graph.fallback_reason is None, graph.fallback_reason


def tutorial_fn(a, b, c, d):
    x = a + b + c + d
    return x.cos().cos()


@needs_triton
def test_tutorial_one_kernel_forward_one_backward():
    inputs = [torch.randn(33, 17, device=DEVICE, requires_grad=True) for _ in range(4)]
    check_compiled(tutorial_fn, *inputs)
    _no_fallback()
    assert _kernels() == [1, 1]
    forward, backward = metrics.compiled_graphs
    assert not forward.externs and not backward.externs


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_softmax_one_kernel(dtype):
    x = torch.randn(9, 37, device=DEVICE, dtype=dtype, requires_grad=True)
    check_compiled(lambda t: torch.softmax(t, -1), x)
    _no_fallback()
    assert _kernels() == [1, 1]


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_layer_norm_one_kernel_forward(dtype):
    model = torch.nn.LayerNorm(45).to(DEVICE, dtype)
    x = torch.randn(3, 5, 45, device=DEVICE, dtype=dtype, requires_grad=True)
    check_compiled(model, x)
    _no_fallback()
    kernels = _kernels()
    assert kernels[0] == 1
    assert not metrics.compiled_graphs[0].externs


@needs_triton
def test_log_softmax_and_rms_norm():
    x = torch.randn(6, 29, device=DEVICE, requires_grad=True)
    w = torch.randn(29, device=DEVICE, requires_grad=True)
    check_compiled(lambda t: torch.log_softmax(t * 2, -1), x)
    assert _kernels()[0] == 1
    metrics.reset()

    def rms_norm(t, weight):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    check_compiled(rms_norm, x, w)
    assert _kernels()[0] == 1


@needs_triton
@pytest.mark.parametrize(
    "shape,dims,keepdim",
    [((7, 13), [-1], False), ((7, 13), [0], True), ((3, 5, 7), [0, 2], False), ((4, 6), None, False),
     ((1, 9), [1], True), ((11, 1), [1], False), ((2, 9000), [1], False), ((5, 3, 4), [1], True)],
)
def test_reductions(shape, dims, keepdim):
    def fn(x):
        if dims is None:
            return x.sum() * 2, x.amax(), x.mean()
        return (
            (x * 2).sum(dims, keepdim=keepdim), x.mean(dims, keepdim=keepdim) + 1,
            x.amax(dims, keepdim=keepdim), x.amin(dims, keepdim=keepdim),
        )

    check_compiled(fn, torch.randn(shape, device=DEVICE, requires_grad=True))
    _no_fallback()
    assert _kernels()[0] >= 1


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_var_std_logsumexp(dtype):
    def fn(x):
        return (
            x.var(-1), x.std(0, correction=0), torch.var_mean(x, -1, keepdim=True)[0],
            torch.logsumexp(x, -1),
        )

    check_compiled(fn, torch.randn(6, 23, device=DEVICE, dtype=dtype, requires_grad=True))
    _no_fallback()
    # only metadata ops (detach of values saved for backward) stay outside the kernels
    assert set(metrics.compiled_graphs[0].externs) <= {"aten.detach.default"}


@needs_triton
def test_softmax_over_a_leading_dim_and_looped_rows():
    check_compiled(lambda t: torch.softmax(t, 0), torch.randn(17, 6, device=DEVICE, requires_grad=True))
    metrics.reset()
    # a row longer than the persistent limit: looped multi-pass kernel
    check_compiled(lambda t: torch.softmax(t, -1), torch.randn(2, 8200, device=DEVICE, requires_grad=True))
    assert _kernels() == [1, 1]


@needs_triton
@pytest.mark.parametrize("shape", [(0,), (1,), (1, 1), (97,), (1023,), (3, 1023), (0, 5), (5, 7, 1)], ids=str)
def test_odd_shapes(shape):
    def fn(x, y):
        return torch.sigmoid(x * 2 + y) * y - x

    x = torch.randn(shape, device=DEVICE, requires_grad=True)
    y = torch.randn(shape, device=DEVICE, requires_grad=True)
    check_compiled(fn, x, y)
    _no_fallback()


@needs_triton
def test_broadcasts_and_non_contiguous_inputs():
    def fn(x, y, z):
        return (x.t() * y + z).exp() * x.t()

    x = torch.randn(13, 7, device=DEVICE, requires_grad=True)
    y = torch.randn(7, 1, device=DEVICE, requires_grad=True)
    z = torch.randn(13, device=DEVICE, requires_grad=True)
    check_compiled(fn, x, y, z)
    _no_fallback()
    metrics.reset()
    base = torch.randn(6, 20, device=DEVICE)
    check_compiled(lambda a, b: (a * 3 + b).tanh(), base[:, ::2], base.t()[:10, :6].t(), backward=False)
    _no_fallback()


@needs_triton
def test_views_inside_a_group():
    def fn(x, y):
        h = (x * 2).permute(1, 0)  # a view of a computed value: index arithmetic, no copy
        return (h + y).sum(-1, keepdim=True).unsqueeze(0) * 3, h.unsqueeze(-1).expand(7, 5, 2) + 1

    check_compiled(fn, torch.randn(5, 7, device=DEVICE, requires_grad=True), torch.randn(7, 5, device=DEVICE))
    _no_fallback()


@needs_triton
def test_dynamic_shapes():
    def fn(x, y):
        return (x * y).sigmoid() + 1, torch.softmax(x, -1)

    check_compiled(fn, torch.randn(5, 12, device=DEVICE, requires_grad=True), torch.randn(5, 12, device=DEVICE), dynamic=True)
    _no_fallback()
    assert sum(_kernels()) >= 2


def test_size_expressions_of_torchs_integer_functions_print_as_python_that_computes_them():
    """Pooling and strided convolutions over symbolic sizes give FloorDiv((s - k), stride) + 1,
    halves of a dim Max(1, s // 2): the wrapper computes each from the inputs' sizes. Every printed
    form agrees with sympy's value of the expression, negative operands included."""
    import sympy
    from torch.utils._sympy import functions as fn

    from ait_dynamo.passes.sizes import SizeError, size_source, size_source_ok

    s, t = sympy.symbols("s t", integer=True)
    expressions = [
        fn.FloorDiv(s - 3, 2) + 1, fn.CeilDiv(s, 3), fn.CleanDiv(4 * s, 4), fn.ModularIndexing(s, 2, 5),
        fn.PythonMod(s, 3), fn.Mod(s * t, 7), fn.Max(1, fn.FloorDiv(s, 2)), s - fn.Max(1, fn.FloorDiv(s, 2)),
        fn.Min(s, t, 4), fn.PowByNatural(s, 2) + t, sympy.Max(s, t) * 2, sympy.Mod(s, t),
    ]
    for expr in expressions:
        source = size_source(expr, {s: "a", t: "b"})
        checked = 0
        for a in range(-7, 12):
            for b in range(1, 6):
                try:
                    value = expr.subs({s: a, t: b})
                except AssertionError:
                    continue  # outside the function's domain: torch's Mod takes non-negative operands
                assert eval(source, {}, {"a": a, "b": b}) == int(value), (expr, source, a, b)
                checked += 1
        assert checked >= 50, expr
    assert not size_source_ok(s / 2 + sympy.Rational(1, 2))  # not an integer expression
    with pytest.raises(SizeError):
        size_source(fn.FloorDiv(s, 2), {})  # a symbol the graph's inputs do not give


@needs_triton
def test_work_after_a_strided_pool_over_symbolic_spatial_sizes_is_fused():
    """Dynamic image sizes: the pool's output is (s - 3) // 2 + 1 wide, a slice to half the
    height s // 2; the pointwise work on both joins generated kernels, compiled once for all sizes."""

    def fn(x):
        pooled = F.avg_pool2d(x, 3, 2)
        return torch.relu(pooled) * 2 + 1, x[:, :, : x.shape[2] // 2].sin()

    sizes = (9, 12, 17)
    frames = dynamo_graphs(fn, [(torch.randn(2, 3, size, size + 2, device=DEVICE),) for size in sizes])
    compiled = torch.compile(fn, backend="ait", dynamic=True)
    for size in sizes:
        x = torch.randn(2, 3, size, size + 2, device=DEVICE, requires_grad=True)
        got = compiled(x)
        want = fn(x)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        (got[0].sum() + got[1].sum()).backward()
        grad = x.grad
        x.grad = None
        (want[0].sum() + want[1].sum()).backward()
        torch.testing.assert_close(grad, x.grad)
    _no_fallback()
    forward = metrics.compiled_graphs[0]
    # one forward and one backward for every size one Dynamo graph serves (torch 2.11's pooling
    # shape guards on the parity of the size: utils.dynamo_graphs)
    assert metrics.graphs_compiled == 2 * frames
    assert {"aten.relu.default", "aten.sin.default"} <= set(forward.fused_ops), forward.refused


@needs_triton
def test_several_outputs_and_horizontal_work():
    def fn(x, y):
        a = x.sin()
        return a * 2, a + y, (y * 3).cos()

    check_compiled(fn, torch.randn(8, 5, device=DEVICE, requires_grad=True), torch.randn(8, 5, device=DEVICE, requires_grad=True))
    assert _kernels()[0] <= 2


def test_nothing_is_generated_where_triton_cannot_run(monkeypatch):
    """On CPU without TRITON_INTERPRET a group would run its decomposed ops one by one, slower
    than ATen's native composite kernels: fusion is off there, softmax stays whole, and the
    default partition saves what the forward computed (devices.for_devices)."""
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)
    x = torch.randn(4, 6, requires_grad=True)
    check_compiled(lambda t: torch.softmax(t.cos() * 2, -1), x)
    _no_fallback()
    assert _kernels() == [0, 0]
    assert "aten._softmax.default" in metrics.compiled_graphs[0].externs
    assert "aten._softmax_backward_data.default" in metrics.compiled_graphs[1].externs


class _Composites(torch.nn.Module):
    """The native composite ops the seed workloads hit: linear + GELU, layer_norm, softmax,
    log_softmax, SiLU and batch norm."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.batch_norm = torch.nn.BatchNorm1d(8)

    def forward(self, x):
        h = self.norm(F.gelu(self.linear(x)) + x)
        h = self.batch_norm(F.silu(h))
        return torch.softmax(h, -1) + torch.log_softmax(h * 2, -1)


# Each composite op as ATen's own kernel: (forward ops, backward ops), inference and training.
_WHOLE_FORWARD = ["aten.gelu.default", "aten.native_layer_norm.default", "aten.silu.default",
                  "aten._softmax.default", "aten._log_softmax.default"]
_WHOLE_BACKWARD = ["aten.gelu_backward.default", "aten.native_layer_norm_backward.default",
                   "aten.silu_backward.default", "aten._softmax_backward_data.default",
                   "aten._log_softmax_backward_data.default", "aten.native_batch_norm_backward.default"]


def _externs(kind: str) -> list[str]:
    return [op.replace("_.", ".") for g in metrics.compiled_graphs if g.kind == kind for op in g.externs]


@pytest.mark.parametrize("entry", ["torch.compile", "memory_efficient_fusion"])
def test_composite_ops_stay_whole_where_triton_cannot_run(monkeypatch, entry):
    """On the CPU without the interpreter, decided when each graph is compiled: every composite op
    stays one ATen call (native_layer_norm, not its decomposition; batch norm ATen's in training
    and in eval), forward and backward, nothing is generated, and results match eager and fp64.
    ``memory_efficient_fusion`` decides per call's devices, as torch.compile does per graph."""
    from ait_dynamo import memory_efficient_fusion
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)
    # oneDNN GEMMs are chosen by a timing on this CPU and fold a following GELU into the GEMM
    # (passes/onednn_gemm.py): under the GPU machine's parallel test load the timing chose them
    # and aten.gelu went missing here. What this test asks is about the composites: GEMMs stay ATen's.
    monkeypatch.setenv("AIT_ONEDNN_GEMMS", "never")
    compiler = memory_efficient_fusion if entry == "memory_efficient_fusion" else None
    model, x = _Composites(), torch.randn(6, 8, requires_grad=True)
    check_compiled(model, x, compiler=compiler)
    _no_fallback()
    assert sum(_kernels()) == 0
    forward = _externs("forward")
    assert all(op in forward for op in _WHOLE_FORWARD), forward
    assert any("batch_norm" in op for op in forward), forward
    backward = _externs("backward")
    assert all(op in backward for op in _WHOLE_BACKWARD), backward
    metrics.reset()
    with torch.no_grad():
        check_compiled(model.eval(), x.detach(), backward=False, compiler=compiler)
    inference = _externs("inference")
    assert all(op in inference for op in _WHOLE_FORWARD), inference
    assert any("batch_norm" in op for op in inference), inference


@needs_triton
def test_groups_run_through_aten_when_their_kernel_fails():
    """The same plan runs a group's nodes as ATen calls when its kernel cannot run."""
    from ait_dynamo import faults
    from ait_dynamo.kernels import runtime

    x = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    with faults.inject("launch"), pytest.warns(RuntimeWarning, match="injected launch failure"):
        check_compiled(lambda t: torch.softmax(t.cos() * 2, -1), x)
    _no_fallback()
    assert _kernels() == [1, 1]
    runtime.BROKEN.clear()  # expected failures: the autouse check is for unexpected ones


def test_refusals_are_recorded():
    def fn(x, w):
        return (x @ w).relu() + 1

    x, w = torch.randn(4, 5), torch.randn(5, 3)
    gm = make_fx(fn)(x, w)
    compile_graph(gm, (x, w), AitConfig.create({}, environ={}))
    record = metrics.compiled_graphs[-1]
    assert any("not in the op table" in reason or "compute" in reason for reason in record.refused.values())


@needs_cpu_triton  # CPU tensors: the golden source is the same on every device
def test_golden_pointwise_kernel(tmp_path):
    def fn(x, y):
        return torch.relu(x * y + 1.5), (x - y).exp()

    x, y = torch.randn(8, 4), torch.randn(4)
    gm = make_fx(fn)(x, y)
    config = AitConfig.create({"debug_dir": str(tmp_path), "cache_dir": str(tmp_path / "c")}, environ={})
    compiled = compile_graph(gm, (x, y), config)
    for got, want in zip(compiled([x, y]), fn(x, y)):
        torch.testing.assert_close(got, want)
    source = (tmp_path / metrics.compiled_graphs[-1].name / "module.py").read_text()
    kernel = source[source.index("@triton.jit\ndef kernel_0"):source.index("@triton.jit\ndef _ait_floor_divide")]
    if os.environ.get("AIT_UPDATE_GOLDEN"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as file:
            file.write(kernel)
    with open(GOLDEN) as file:
        assert kernel == file.read()


@needs_triton
def test_fusion_report_html(tmp_path):
    x = torch.randn(6, 10, device=DEVICE, requires_grad=True)
    w = torch.randn(10, 4, device=DEVICE)
    check_compiled(lambda t, v: torch.softmax(t @ v, -1) * 2, x, w, options={"debug_dir": str(tmp_path)})
    forward = metrics.compiled_graphs[0]
    page = (tmp_path / forward.name / "fusion_report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "kernel_0" in page and "aten.amax" in page
    # refused, with its reason (the GEMM backend rule: no measurement on the CPU keeps ATen)
    assert "<td>aten.mm.default</td><td>compute_intensive op: GEMM runs through ATen (no measurement" in page
    text = (tmp_path / forward.name / "fusion_report.txt").read_text()
    assert "reads" in text and "writes" in text


def test_autotune_choice_is_persisted(tmp_path):
    from ait_dynamo.kernels import autotune

    autotune.set_directory(str(tmp_path))
    autotune._memory.clear()
    ran = []
    speed = {(1024, 4): 3.0, (2048, 8): 1.0, (512, 4): 2.0}
    choice = autotune.choose("abc123", (5000,), list(speed), ran.append, device="dev", bench=lambda fn: (fn(), speed[ran[-1]])[1])
    assert choice == (2048, 8) and len(ran) == 3
    autotune._memory.clear()
    again = autotune.choose("abc123", (6000,), list(speed), ran.append, device="dev", bench=lambda fn: 0.0)
    assert again == (2048, 8) and len(ran) == 3  # same size bucket: read from disk, nothing re-run
    assert (tmp_path / "autotune" / "abc123.json").exists()


@needs_triton
def test_autotune_option_generates_tuned_launches(tmp_path):
    x = torch.randn(5, 8, device=DEVICE, requires_grad=True)
    check_compiled(lambda t: torch.softmax(t.sin(), -1), x, options={"autotune": True, "debug_dir": str(tmp_path)})
    source = (tmp_path / metrics.compiled_graphs[0].name / "module.py").read_text()
    assert "tune='" in source


def test_int64_indexing_past_2_pow_31(tmp_path):
    """Sizes past 2**31 index in int64 (checked on the generated source: meta tensors, no data)."""

    def fn(x, y):
        return x * 2 + 1, (y * 3).sum(-1)

    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    def source_for(*inputs):
        gm = make_fx(fn)(*inputs)
        config = AitConfig.create({"cache_dir": str(tmp_path / "c")}, environ={})
        plan, _ = build_plan(run_passes(gm, config), config)
        # Triton never runs on meta tensors: ask for the kernels' source all the same
        return generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True).source

    source = source_for(torch.empty(2**31 + 8, device="meta"), torch.empty(3, 2**30 + 1, device="meta"))
    assert source.count("tl.program_id(0).to(tl.int64)") == 2
    source = source_for(torch.empty(64, device="meta"), torch.empty(3, 5, device="meta"))
    assert "@triton.jit" in source and "tl.int64" not in source


@needs_triton
@pytest.mark.parametrize("shape,dim", [((6, 11), -1), ((6, 11), 0), ((2, 8200), 1)], ids=str)
def test_prod_any_all(shape, dim):
    def fn(x):
        return (x * 0.5 + 1).prod(dim), (x > 1.5).any(dim), (x > -2.5).all(dim), x.prod(), (x > 0).all()

    x = torch.randn(shape, device=DEVICE)
    x[0, 0] = 0.0
    check_compiled(fn, x, backward=False)
    _no_fallback()
    assert "aten.prod.dim_int" in metrics.compiled_graphs[0].fused_ops
    assert any(op.startswith("aten.any") for op in metrics.compiled_graphs[0].fused_ops)


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_dropout_philox(dtype):
    """Dropout runs in the kernel (Philox): values differ from eager's stream, so check what
    must hold: kept elements scaled by 1/(1-p), the drop rate, the backward's use of the same
    mask, reproducibility under torch.manual_seed and fresh masks on each call."""
    p = 0.3

    def fn(x):
        return F.dropout(x, p, training=True) * 2

    compiled = torch.compile(fn, backend="ait", options={"fallback_random": False})
    x = torch.ones(64, 97, device=DEVICE, dtype=dtype, requires_grad=True)
    torch.manual_seed(1)
    out = compiled(x)
    out.sum().backward()
    _no_fallback()
    assert _kernels() == [1, 1]
    assert "aten.rand_like.default" in metrics.compiled_graphs[0].fused_ops
    scale = 2 / (1 - p)
    kept = out != 0
    torch.testing.assert_close(out[kept].float(), torch.full_like(out[kept].float(), scale), rtol=1e-2, atol=0)
    rate = 1 - kept.float().mean().item()
    assert abs(rate - p) < 0.05, rate
    torch.testing.assert_close(x.grad.float(), kept.float() * scale, rtol=1e-2, atol=0)  # same mask backward
    torch.manual_seed(1)
    assert torch.equal(compiled(x), out)
    assert not torch.equal(compiled(x), out)


@needs_triton
def test_dynamic_batch_sizes_reuse_one_compile():
    def fn(x, w, b):
        h = F.layer_norm(x, (x.shape[-1],), w, b)
        return torch.softmax(h * 2, -1) + torch.sigmoid(x)

    w = torch.randn(24, device=DEVICE, requires_grad=True)
    b = torch.randn(24, device=DEVICE, requires_grad=True)
    compiled = torch.compile(fn, backend="ait", dynamic=True)
    for batch in (3, 7, 16):
        x = torch.randn(batch, 24, device=DEVICE, requires_grad=True)
        got = compiled(x, w, b)
        torch.testing.assert_close(got, fn(x, w, b), rtol=1e-4, atol=1e-5)
        got.sum().backward()
    _no_fallback()
    assert metrics.graphs_compiled == 2  # one forward, one backward for every batch size
    assert metrics.compiled_graphs[0].kernels


@needs_triton
def test_layer_norm_looped_row():
    model = torch.nn.LayerNorm(8200).to(DEVICE)
    check_compiled(model, torch.randn(2, 8200, device=DEVICE, requires_grad=True))
    _no_fallback()
    assert _kernels()[0] == 1


def test_precompile_arguments_match_the_launch(monkeypatch, tmp_path):
    """Ahead-of-launch compilation must specialise exactly like the launch: same dtypes and ints."""
    from ait_dynamo.cache import load_module
    from ait_dynamo.kernels import precompile as precompile_module
    from ait_dynamo.kernels import runtime
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    def fn(x, y):
        return torch.softmax(x.t() * 2, -1), (x + y.t()).sum(0), torch.sigmoid(x)

    x, y = torch.randn(1024, 10), torch.randn(10, 1024)  # enough rows that the column sum splits off the interpreter too
    gm = make_fx(fn)(x, y)
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    generated = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True)
    module, _ = load_module(generated.source, str(tmp_path))
    launched = {}

    def record_pointwise(kernel, tensors, ints, xnumel, tune=None):
        launched[kernel] = (tuple(t.dtype for t in tensors), (*ints, xnumel))

    def record_reduction(kernel, tensors, ints, xnumel, rnumel, persistent, column=False, tune=None, splits=1):
        launched[kernel] = (tuple(t.dtype for t in tensors), (*ints, xnumel, rnumel))

    monkeypatch.setattr(runtime, "launch_pointwise", record_pointwise)
    monkeypatch.setattr(runtime, "launch_reduction", record_reduction)
    module.make_call(generated.constants)([x, y])
    assert len(launched) == len(generated.kernels) >= 2
    assert any(kernel.split for kernel in generated.kernels)  # (x + y.t()).sum(0): split columns
    for kernel in generated.kernels:
        assert launched[getattr(module, kernel.name)] == kernel.warmup

    warmed = []

    class FakeKernel:
        def warmup(self, *args, grid, **kwargs):
            warmed.append((args, kwargs))

    for kernel in generated.kernels:
        precompile_module._warm(FakeKernel(), kernel.warmup, kernel.kind, kernel.persistent, kernel.column)
    assert len(warmed) == len(generated.kernels) and all("num_warps" in kw for _, kw in warmed)


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_split_column_reductions(dtype):
    """Few long columns (bias / layer_norm weight gradients): rows split over programs, float32
    partial sums added by the wrapper."""

    def fn(x, w, b):
        return (x @ w + b).relu(), (x * 2).sum(0), x.mean(0, keepdim=True)

    x = torch.randn(40, 6, device=DEVICE, dtype=dtype, requires_grad=True)
    w = torch.randn(6, 5, device=DEVICE, dtype=dtype, requires_grad=True)
    b = torch.randn(5, device=DEVICE, dtype=dtype, requires_grad=True)
    check_compiled(fn, x, w, b)
    _no_fallback()
    source_ops = [op for g in metrics.compiled_graphs for op in g.fused_ops]
    assert source_ops.count("aten.sum.dim_IntList") >= 2


def _split_sites(folder, graphs: str = "*") -> int:
    """How many split reductions the modules in a debug folder finish (``kernels/split_sum.py``);
    ``graphs`` picks the graph folders (``"*_forward"``: the forward's alone)."""
    return sum(len(set(re.findall(r"(\w+_sum_site)\.launch\(", path.read_text())))
               for path in folder.glob(f"{graphs}/module.py"))


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_whole_tensor_reductions_split_their_row(dtype, tmp_path):
    """A reduction of a whole tensor is one long row: it splits over programs into float32
    partial results that the finishing kernel combines by kind (sum, mean, max, min, all, any;
    a NaN or an inf anywhere, in any split, still decides the result), in one kernel for all six."""

    def fn(x):
        return x.sum(), x.mean(), x.amax(), x.amin(), (x > -4).all(), torch.isinf(x).any()

    for poison in (None, float("nan"), float("inf")):
        x = torch.randn(4, 8200, device=DEVICE, dtype=dtype)  # 32800 elements: a looped row, 4 splits on a GPU
        if poison is not None:
            x[3, 8000] = poison  # in the last split
        folder = tmp_path / str(poison)
        metrics.reset()
        check_compiled(fn, x, backward=False, options={"debug_dir": str(folder)})
        _no_fallback()
        assert _kernels() == [2], _kernels()  # the six reductions and their finishing kernel
        assert _split_sites(folder) == 1


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_few_long_rows_split_and_their_readers_run_apart(dtype, tmp_path):
    """T5's float16 guard, clamp(x, -m, m) with m = where(isinf(x).any(), ...): the any splits
    its row (its reader, the where, runs in the clamp's kernel, not in the reduction's, which
    would then walk the whole tensor on one program), and isinf and the tensor-bounded clamp are
    generated, not ATen calls. A full-size reader (softmax's) keeps a long row in one looped
    kernel instead."""

    def guard(x):
        big = torch.where(torch.isinf(x).any(), 1.5, 2.0)  # T5: float16's largest value, less 1000 after an inf
        return torch.clamp(x, min=-big, max=big) * 2

    def row_sums(x):
        return x.sum(-1, keepdim=True) * x.pow(2).mean(-1, keepdim=True)

    x = torch.randn(2, 16400, device=DEVICE, dtype=dtype, requires_grad=True)
    check_compiled(guard, x, options={"debug_dir": str(tmp_path / "guard")})
    _no_fallback()
    forward = metrics.compiled_graphs[0]
    assert not forward.externs, forward.externs
    assert {"aten.isinf.default", "aten.clamp.Tensor", "aten.where.self"} <= set(forward.fused_ops)
    # the forward's any (torch 2.14's clamp backward reads the bounds again, and the partitioner
    # recomputes the any there rather than saving a mask: that one splits too)
    assert _split_sites(tmp_path / "guard", "*_forward") == 1
    metrics.reset()
    check_compiled(row_sums, x, options={"debug_dir": str(tmp_path / "row_sums")})
    _no_fallback()
    assert _split_sites(tmp_path / "row_sums") == 0  # two rows of 16400: one program each is enough
    metrics.reset()
    long_rows = torch.randn(2, 33000, device=DEVICE, dtype=dtype, requires_grad=True)
    check_compiled(row_sums, long_rows, options={"debug_dir": str(tmp_path / "long_rows")})
    _no_fallback()
    assert _split_sites(tmp_path / "long_rows") >= 1  # two rows of 33000: split in four
    metrics.reset()
    check_compiled(lambda t: torch.softmax(t, -1), long_rows, options={"debug_dir": str(tmp_path / "softmax")})
    _no_fallback()
    # the max's and the sum's readers are full-size: they keep softmax in one looped kernel
    assert _kernels() == [1, 1] and _split_sites(tmp_path / "softmax") == 0


@needs_triton
def test_a_failing_kernel_falls_back_to_aten(monkeypatch):
    """A kernel that fails to compile or launch warns once; its group then runs through ATen."""
    from ait_dynamo.kernels import runtime

    def broken(*args, **kwargs):
        raise RuntimeError("simulated Triton compile error")

    monkeypatch.setattr(runtime, "launch_pointwise", broken)
    x = torch.randn(5, 7, device=DEVICE, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="simulated Triton compile error"):
        check_compiled(lambda t: (t * 2).cos() + 1, x)
    assert len(runtime.BROKEN) == 2  # forward and backward kernels
    runtime.BROKEN.clear()  # expected failures: the autouse check is for unexpected ones


@needs_triton
def test_views_of_inputs_are_read_in_place():
    """Slices, transposes, expands and view chains of kernel inputs: no ATen call, the kernel
    indexes the base tensor with the view's strides and offset."""

    def fn(x, y):
        return x[:, 2:9].t() * 2 + y.unsqueeze(0).expand(7, 7), (x[1:4, ::2] + 1).sum(-1)

    x = torch.randn(7, 12, device=DEVICE, requires_grad=True)
    y = torch.randn(7, device=DEVICE, requires_grad=True)
    check_compiled(fn, x, y)
    _no_fallback()
    forward = metrics.compiled_graphs[0]
    assert not [e for e in forward.externs if "slice" in e or "permute" in e or "expand" in e], forward.externs


@needs_triton
def test_views_read_in_place_also_run_through_aten():
    """A group whose kernel fails rebuilds the views its kernel read in place."""
    from ait_dynamo import faults
    from ait_dynamo.kernels import runtime

    x = torch.randn(6, 10, device=DEVICE, requires_grad=True)
    with faults.inject("launch"), pytest.warns(RuntimeWarning, match="injected launch failure"):
        check_compiled(lambda t: (t[:, 1:7].t() * 3).exp(), x)
    _no_fallback()
    # the backward: the gradient's kernel, then slice_backward's (a masked load, tests/test_fusion_cat.py)
    assert _kernels() == [1, 2]
    runtime.BROKEN.clear()


@needs_triton
def test_squeeze_excitation_scale_joins_the_multiply():
    """y * sigmoid(conv(mean(y))): the multiply cannot join y's reduction kernel (its other operand
    is computed from that kernel's result), so it joins the sigmoid's small group, widened to y's
    space: two kernels (relu + mean, sigmoid + multiply), not a third for the sigmoid alone."""
    def squeeze_excitation(x, w):
        y = torch.relu(x)
        return y * torch.sigmoid(F.conv2d(y.mean((2, 3), keepdim=True), w))

    x = torch.randn(2, 6, 5, 7, device=DEVICE, requires_grad=True)
    check_compiled(squeeze_excitation, x, torch.randn(6, 6, 1, 1, device=DEVICE, requires_grad=True))
    _no_fallback()
    forward = metrics.compiled_graphs[0]
    assert forward.kind == "forward" and len(forward.kernels) == 2, (forward.kernels, forward.fused_ops)


@needs_triton
def test_a_cast_and_a_flattening_view_change_places():
    """Hugging Face's causal-LM loss: ``logits.float().view(-1, V)`` then cross-entropy. The cast
    moves past the view (``passes/cast_views.py``) into the log_softmax row kernel, forward and
    backward (there the cast back to bfloat16 joins the gradient's kernel): no full-size float32
    copy of the logits written by a kernel of its own."""

    def loss(logits, labels):
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))

    logits = torch.randn(2, 8, 37, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 37, (2, 8), device=DEVICE)
    check_compiled(loss, logits, labels)
    _no_fallback()
    forward, backward = metrics.compiled_graphs
    assert len(forward.kernels) == 1 and len(backward.kernels) == 2, (forward.kernels, backward.kernels)
    assert not [e for e in forward.externs + backward.externs if "_to_copy" in e]


@needs_triton
def test_a_cast_does_not_move_past_a_view_its_input_cannot_take():
    """An expanded input cast to float32 (the cast makes it dense) and then viewed: the view of the
    input itself does not exist, so the cast stays where it is (no compile error)."""

    def fn(x):
        return x.to(torch.float32).view(24, 5).softmax(-1)

    expanded = torch.randn(1, 6, 5, device=DEVICE, dtype=torch.bfloat16).expand(4, 6, 5)  # stride 0 along dim 0
    torch.testing.assert_close(torch.compile(fn, backend="ait")(expanded), fn(expanded))
    _no_fallback()


@needs_triton
def test_a_cast_of_a_gemm_product_moves_past_its_view_into_the_reading_kernel():
    """GPT-2's training backward: a bfloat16 GEMM product cast to float32, then viewed as [batch,
    tokens, N] and read by a pointwise kernel. The cast moves below the view (the view of a GEMM
    product is read in place), so it joins that kernel instead of being one of its own."""

    def fn(x, w, y):
        product = (x @ w).float().view(4, 8, 24)
        return (product * y + 1).to(torch.bfloat16)

    x = torch.randn(32, 16, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(16, 24, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randn(4, 8, 24, device=DEVICE, requires_grad=True)
    check_compiled(fn, x, w, y, options={"gemm_backends": ("aten",)})
    _no_fallback()
    forward = metrics.compiled_graphs[0]
    assert forward.kind == "forward" and len(forward.kernels) == 1, (forward.kernels, forward.fused_ops)
    assert forward.fused_ops.count("aten._to_copy.default") == 2, forward.fused_ops


def test_one_walk_finds_what_reads_a_reduction():
    """``computed_from_reductions`` (one walk forwards, what the planner asks) names exactly the
    members for which ``reads_reduction`` (a walk backwards per node) holds: a softmax and a
    layer norm with their epilogues, members outside the reductions' reach, and some of the
    reductions left out of the list."""
    from ait_dynamo.kernels import op_table
    from ait_dynamo.kernels.column_reduction import computed_from_reductions, reads_reduction
    from ait_dynamo.passes.decompositions import decomposition_table

    def fn(x, w):
        y = torch.sin(x) * w  # no reduction upstream
        s = torch.softmax(y, -1) * 2 + 1
        n = F.layer_norm(x, (x.shape[-1],)) * y
        return s + n, torch.cos(w)

    table = decomposition_table(AitConfig.create({}, environ={}))
    gm = make_fx(fn, decomposition_table=table)(torch.randn(4, 8), torch.randn(8))
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    members = set(nodes)
    all_reductions = [n for n in nodes if n.target in op_table.REDUCTIONS]
    assert len(all_reductions) >= 3
    for reductions in (all_reductions, all_reductions[:1], all_reductions[1:]):
        found = computed_from_reductions(members, reductions)
        assert found == {n for n in nodes if reads_reduction(n, members, reductions)}
        assert found and found != members
