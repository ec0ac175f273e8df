"""The generated wrapper's hot path (issue 12): device decided at compile time, one bound launch
per kernel, failure isolation outside the steady state (``kernels/launch_site.py``)."""

from __future__ import annotations

import re

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import launch_site as launch_site_module
from ait_dynamo.kernels import runtime
from ait_dynamo.kernels.launch_site import LaunchSite
from ait_dynamo.kernels.wrapper import generate_wrapper
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.pipeline import run_passes

needs_triton = pytest.mark.skipif(not runtime.triton_runs_on("cpu"), reason="Triton cannot run here (set TRITON_INTERPRET=1)")


def _fn(x, w):
    return torch.relu(x @ w + 1).sum(-1), (x * 2).exp()


def _generated(triton_runs: bool, tmp_path, **options):
    x, w = torch.randn(6, 5), torch.randn(5, 7)
    gm = make_fx(_fn)(x, w)
    config = AitConfig.create({"cache_dir": str(tmp_path), **options}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    return generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: triton_runs), (x, w)


def _call_body(source: str) -> str:
    """The plain body every call after the first runs (the first checks layouts: layout_guard.py)."""
    start = source.index("    def call(args):")
    return source[start:source.index("    call._boxed_call = True", start)]


def test_the_call_body_is_straight_line_where_triton_runs(tmp_path):
    generated, _ = _generated(True, tmp_path)
    body = _call_body(generated.source)
    kernels = len(generated.kernels)
    assert kernels == 2
    # one launch per kernel, each in a try whose except runs ATen; no per-call device, broken-set or flag test
    assert body.count(".launch(") == kernels and body.count("try:") == kernels
    assert body.count(".recover(error, ") == kernels
    assert not re.search(r"_TRITON_ON|BROKEN|launched_|\bif\b", body), body
    # sites and entry points are bound once, in make_call, before call
    setup = generated.source[generated.source.index("def make_call"):generated.source.index("    def call(args):")]
    assert setup.count("= LaunchSite(") == kernels
    assert "_aten_mm_default = torch.mm" in setup and "_aten_mm_default(" in body
    assert "torch.ops.aten" not in body  # externs through their bound entry points


def test_a_wrapper_on_one_cuda_device_allocates_through_the_current_device_allocator(tmp_path):
    """Kernel outputs of a graph on one CUDA device come from ``_empty_strided_cuda`` (one device
    test per call picks it, or ``torch.empty_strided`` on the graph's device when another device
    is current); a CPU graph's keep ``torch.empty_strided``. Traced with fake CUDA tensors, so
    this runs without a GPU (tests/test_fusion_gpu.py runs such a wrapper); on device 0, which a
    fake tensor on a GPU machine checks exists."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        gm = make_fx(_fn, tracing_mode="fake")(torch.empty(6, 5, device="cuda:0"), torch.empty(5, 7, device="cuda:0"))
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    source = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True).source
    body = _call_body(source)
    assert body.count("_alloc(") == 2 and "torch.empty_strided" not in body
    assert body.count("_alloc = _alloc_here if _rt.current_cuda_device() == 0 else _alloc_elsewhere") == 1
    assert "_alloc_here, _alloc_elsewhere = _rt.cuda_allocators(0)" in source
    cpu_body = _call_body(_generated(True, tmp_path)[0].source)
    assert "_alloc" not in cpu_body and cpu_body.count("torch.empty_strided(") == 2


def test_where_triton_does_not_run_the_module_is_aten_calls_only(tmp_path):
    generated, (x, w) = _generated(False, tmp_path)
    assert "import triton" not in generated.source and "LaunchSite" not in generated.source
    assert "try:" not in _call_body(generated.source)
    from ait_dynamo.cache import load_module

    module, _ = load_module(generated.source, str(tmp_path))
    for got, want in zip(module.make_call(generated.constants)([x, w]), _fn(x, w)):
        torch.testing.assert_close(got, want)


@needs_triton
def test_a_failed_launch_retires_the_site_and_aten_runs_from_then_on(tmp_path, monkeypatch):
    from ait_dynamo.cache import load_module

    generated, (x, w) = _generated(True, tmp_path)
    module, _ = load_module(generated.source, str(tmp_path))
    call = module.make_call(generated.constants)
    attempts = []

    def failing(*args, **kwargs):
        attempts.append(args[0])
        raise RuntimeError("simulated launch failure")

    monkeypatch.setattr(runtime, "launch_pointwise", failing)
    with pytest.warns(RuntimeWarning, match="simulated launch failure"):
        first = call([x, w])
    tried = len(attempts)
    assert tried == 1  # the pointwise kernel; the reduction launched
    for _ in range(3):
        again = call([x, w])
    assert len(attempts) == tried  # retired: never tried again, no new warning
    for got, want in zip(again, _fn(x, w)):
        torch.testing.assert_close(got, want)
    for got, want in zip(first, _fn(x, w)):
        torch.testing.assert_close(got, want)
    runtime.BROKEN.clear()


class _FakeCompiled:
    """Stands for a compiled Triton kernel: records what its C launcher was called with."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple] = []
        self.function, self.packed_metadata = "function", "metadata"
        self.fail = fail

    def run(self, *args):
        if self.fail:
            raise TypeError("another launcher convention")
        self.calls.append(args)


def test_the_direct_path_calls_the_launcher_and_rechecks_only_what_triton_specializes_on(monkeypatch):
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 77, raising=False)
    generic = []
    site = LaunchSite(object(), lambda *a: a, "kernel_0", "pointwise", 2, xnumel=40, checked=(0,), seeds=(3,))
    monkeypatch.setattr(site, "_generic", lambda *args: generic.append(args))
    compiled = _FakeCompiled()
    base = torch.zeros(64)
    out = torch.empty(40)
    aligned, seed = base[:40], 5
    key = launch_site_module._specialization_key((aligned, out, 40, seed), (0,), (3,))
    direct = site._bind(runtime.Launched((3, 1, 1), (16,), 4, compiled), 0, key)
    direct(aligned, out, 40, 21)  # another seed with the same specialization (not 1, not a multiple of 16)
    assert compiled.calls == [(3, 1, 1, 77, "function", "metadata", None, None, None, aligned, out, 40, 21, 40, 16)]
    direct(base[1:41], out, 40, 5)  # a misaligned input: Triton's JIT picks (or compiles) its own binary
    direct(aligned, out, 40, 32)  # a seed divisible by 16: likewise
    assert len(compiled.calls) == 1 and len(generic) == 2
    assert site.direct


class _FakeLauncher:
    """Stands for Triton 3.6's CudaLauncher: ``launch`` is its C function, called directly."""

    def __init__(self, scratch: int = 0):
        self.calls: list[tuple] = []
        self.launch = _Recorder(self.calls)
        self.global_scratch_size = scratch
        self.profile_scratch_size = 0
        self.launch_cooperative_grid, self.launch_pdl = False, True

    def __call__(self, *args):
        raise AssertionError("the Python wrapper runs where the C function should be called directly")


class _Recorder:
    def __init__(self, calls: list[tuple]):
        self.calls = calls

    def __call__(self, *args):
        self.calls.append(args)


def test_the_direct_path_calls_tritons_c_launch_function_where_its_convention_is_known(monkeypatch):
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 77, raising=False)
    compiled = _FakeCompiled()
    compiled.run = _FakeLauncher()
    monkeypatch.setattr(runtime, "BARE_LAUNCHER_VERSIONS", (runtime.triton.__version__,))
    site = LaunchSite(object(), lambda *a: a, "kernel_0", "pointwise", 2, xnumel=40)
    x, out = torch.zeros(40), torch.empty(40)
    direct = site._bind(runtime.Launched((3, 1, 1), (16,), 4, compiled), 0, ())
    direct(x, out)
    assert compiled.run.calls == [(3, 1, 1, 77, "function", False, True, None, None, "metadata", None, None, None,
                                   x, out, 40, 16)]


def test_the_c_launch_function_is_called_only_where_nothing_is_skipped():
    compiled = _FakeCompiled()
    compiled.run = _FakeLauncher()
    assert runtime.bare_launcher(compiled, "3.6.0") == (compiled.run.launch, False, True)
    assert runtime.bare_launcher(compiled, "3.5.1") is None  # a convention not read from its source
    assert runtime.bare_launcher(_FakeCompiled(), "3.6.0") is None  # no C function under run
    compiled.run = _FakeLauncher(scratch=128)  # scratch memory: the wrapper allocates it
    assert runtime.bare_launcher(compiled, "3.6.0") is None
    compiled.run = _FakeLauncher()
    compiled.run.launch = lambda *args: None  # tensor descriptors: Triton wraps the C function in Python
    assert runtime.bare_launcher(compiled, "3.6.0") is None


def test_the_direct_path_gives_way_to_the_jit_for_another_launcher_convention(monkeypatch):
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 0, raising=False)
    monkeypatch.setitem(runtime._DIRECT, "on", True)
    generic = []
    site = LaunchSite(object(), lambda *a: a, "kernel_0", "reduction", 1, xnumel=4, rnumel=8)
    monkeypatch.setattr(site, "_generic", lambda *args: generic.append(args))
    site.launch = site._bind(runtime.Launched((1, 1, 1), (4, 8), 2, _FakeCompiled(fail=True)), 0, ((), ()))
    with pytest.warns(RuntimeWarning, match="direct Triton launches turned off"):
        site.launch(torch.zeros(4))
    assert len(generic) == 1 and not runtime._DIRECT["on"]
    site.launch(torch.zeros(4))  # rebound: straight to the JIT
    assert len(generic) == 2


def test_a_launch_site_rejects_an_unknown_kind():
    # "gemm" was the unknown kind here before the GEMM template, "convolution" before the
    # depthwise one ("conv"): any other name still is
    with pytest.raises(ValueError, match="kind must be 'pointwise', 'reduction', 'gemm' or 'conv'"):
        LaunchSite(object(), lambda: (), "k", "convolution", 1)
    with pytest.raises(ValueError, match="gemm site needs its problem"):
        LaunchSite(object(), lambda: (), "k", "gemm", 1)
    with pytest.raises(ValueError, match="conv site needs its problem"):
        LaunchSite(object(), lambda: (), "k", "conv", 1)


@needs_triton
def test_compiled_graphs_launch_through_sites_and_match_eager():
    x = torch.randn(6, 5, requires_grad=True)
    w = torch.randn(5, 7, requires_grad=True)
    compiled = torch.compile(_fn, backend="ait")
    for _ in range(3):  # the first call binds; later calls take the bound path
        got = compiled(x, w)
        torch.testing.assert_close(got[0], _fn(x, w)[0])
    (got[0].sum() + got[1].sum()).backward()
    assert all(g.kernels for g in metrics.compiled_graphs)
    assert not runtime.BROKEN


def _slot_fn(x, w):
    a = x.sin() * 2
    b = a @ w  # a dies: its buffer is free from here
    c = x.cos() * 3  # x lives on, so c cannot be written into x: it takes a's buffer
    d = c @ w
    e = (x * 5).exp()  # takes c's
    return b + d + e @ w, x.tanh()  # the returned tanh takes e's


def test_kernel_outputs_take_dead_buffers_of_their_layout(tmp_path):
    from ait_dynamo.cache import load_module

    x, w = torch.randn(8, 8), torch.randn(8, 8)
    gm = make_fx(_slot_fn)(x, w)
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    generated = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True)
    body = _call_body(generated.source)
    assert body.count("torch.empty_strided(") == 1, body  # one allocation for four kernel outputs
    assert re.search(r"\n\s+mul_1 = mul\n", body) and re.search(r"\n\s+exp = mul_1\n", body), body
    if runtime.triton_runs_on("cpu"):
        module, _ = load_module(generated.source, str(tmp_path))
        for got, want in zip(module.make_call(generated.constants)([x, w]), _slot_fn(x, w)):
            # a kernel's exp against ATen's: a few float32 ulps apart where x * 5 is large; a
            # buffer handed over too early would be wrong by the value itself
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_dead_buffer_is_not_held_across_the_plans_peak(tmp_path):
    """``a``'s buffer dies at the first mm; ``c`` has its layout but comes after ``big``, the
    plan's peak. Holding ``a`` for ``c`` would raise that peak by its size: ``c`` is allocated."""

    def fn(x, w, p, q):
        a = x.sin() * 2
        b = a @ w  # a dies
        big = p @ q  # 64 x 64: the peak
        c = x.cos() * 3
        return b + (c @ w) * big.sum()

    args = (torch.randn(8, 8), torch.randn(8, 8), torch.randn(64, 8), torch.randn(8, 64))
    gm = make_fx(fn)(*args)
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    generated = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True)
    body = _call_body(generated.source)
    assert not re.search(r"\n\s+mul_1 = mul\n", body), body
    assert re.search(r"\n\s+del mul\n\s+mm_1 = ", body), body  # freed where it died, before the peak


def test_a_buffer_with_a_live_view_or_returned_is_never_handed_over(tmp_path):
    def fn(x, w):
        a = x.sin() * 2
        view = a.t()  # a view of a, read after a's own last use
        b = a @ w
        c = x.cos() * 3  # must not take a's buffer while the view lives
        return b + c, view.sum(0) * c

    x, w = torch.randn(8, 8), torch.randn(8, 8)
    gm = make_fx(fn)(x, w)
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    generated = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True)
    assert not re.search(r"\n\s+\w+ = mul\n", _call_body(generated.source)), _call_body(generated.source)


@needs_triton
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_slots_compiled_forward_and_backward_match_eager(dynamic):
    from utils import check_compiled

    x = torch.randn(8, 8, requires_grad=True)
    w = torch.randn(8, 8, requires_grad=True)
    check_compiled(_slot_fn, x, w, dynamic=dynamic)
