"""CUTLASS GEMMs (issue 14) on the CPU: what the pass matches and how it rewrites (graphs traced
on fake CUDA tensors, the build replaced by a stub), the refusal rules, the rendered C++, the
toolchain's discovery, and the skip without one. The kernels themselves run in
tests/test_cutlass_gemm_gpu.py."""

from __future__ import annotations

import json
import logging
import operator

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import cutlass_build, cutlass_gemm
from ait_dynamo.passes import cutlass_gemm as cutlass_pass

aten = torch.ops.aten


def _meta(*shape, dtype=torch.float16, stride=None):
    t = torch.empty(*shape, dtype=dtype, device="meta")
    return t if stride is None else t.as_strided(shape, stride)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("activation", sorted(cutlass_gemm.ACTIVATIONS))
def test_every_kernel_kind_renders_its_cutlass_types(dtype, activation):
    for spec in cutlass_gemm.specs(dtype, "row", "col", activation, residual=activation == "relu",
                                   pre=activation == "gelu"):
        source = spec.source()
        assert f"using Element = {cutlass_gemm.ELEMENTS[dtype]};" in source
        assert f"cutlass::epilogue::thread::{cutlass_gemm.ACTIVATIONS[activation]}," in source
        assert ("LinCombPerColBiasEltActAux" in source) == (activation == "gelu")
        assert ("using ElementC = Element;" in source) == (activation == "relu")
        assert f"KernelTmaWarpSpecialized{spec.schedule};" in source
        tile_k = spec.tile[2] // 2 if dtype == torch.float32 else spec.tile[2]  # TF32: half the K tile
        assert f"Shape<_{spec.tile[0]}, _{spec.tile[1]}, _{tile_k}>" in source
        assert 'extern "C" int ait_cutlass_run(' in source and "{{" not in source


def test_operand_layouts_name_the_contiguous_dim():
    a = _meta(64, 32)
    assert cutlass_gemm.operand_layout(a) == ("row", 32)
    assert cutlass_gemm.operand_layout(_meta(48, 32).t()) == ("col", 32)  # nn.Linear's weight: K contiguous
    assert cutlass_gemm.operand_layout(_meta(64, 40, stride=(48, 1))) == ("row", 48)
    assert cutlass_gemm.operand_layout(_meta(4, 4, stride=(8, 2))) is None


@pytest.mark.parametrize("case, reason", [
    ((_meta(64, 30), _meta(30, 48)), "16-byte aligned"),              # K = 30
    ((_meta(64, 32), _meta(32, 50)), "16-byte aligned"),              # N = 50
    ((_meta(64, 32, dtype=torch.float64), _meta(32, 48, dtype=torch.float64)), "dtype"),
    ((_meta(64, 32), _meta(32, 48, dtype=torch.bfloat16)), "dtype"),
    ((_meta(64, 32, stride=(64, 2)), _meta(32, 48)), "unit stride"),
    ((_meta(64, 32), _meta(32, 48), _meta(48, 1)), "bias"),
    ((_meta(64, 32), _meta(32, 48), None, _meta(48, 64).t()), "residual"),
    ((_meta(0, 32), _meta(32, 48)), "empty"),
])
def test_refusals_say_why(case, reason):
    a, b, *rest = case
    bias, residual = (rest + [None, None])[:2]
    assert reason in cutlass_gemm.refusal(a, b, bias, residual, a.dtype)


def test_float32_needs_tf32_and_k_major_operands():
    a, w = _meta(64, 32, dtype=torch.float32), _meta(48, 32, dtype=torch.float32)
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert "allow_tf32" in cutlass_gemm.refusal(a, w.t(), None, None, torch.float32)
        torch.backends.cuda.matmul.allow_tf32 = True
        assert cutlass_gemm.refusal(a, w.t(), None, None, torch.float32) is None
        assert "K-major" in cutlass_gemm.refusal(a, _meta(32, 48, dtype=torch.float32), None, None, torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert cutlass_gemm.refusal(a.t().contiguous().t(), w.t(), None, None, torch.float16) is not None


def _fake_cuda(fn, *shapes, dtype=torch.float16):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        inputs = [torch.empty(*s, device="cuda", dtype=dtype) for s in shapes]
        return make_fx(fn, tracing_mode="fake")(*inputs)


@pytest.fixture
def stub_build(monkeypatch):
    """A toolchain that 'builds' each source to a path naming its spec: the pass's decisions
    without nvcc."""
    built: list[str] = []

    def build_all(sources, cache_dir):
        built.extend(sources)
        return [f"/stub/{source.splitlines()[0].split()[-1]}.so" for source in sources]

    monkeypatch.setattr(cutlass_build, "available", lambda: True)
    monkeypatch.setattr(cutlass_build, "build_all", build_all)
    return built


def _config(tmp_path, **options):
    return AitConfig.create({"cache_dir": str(tmp_path), "gemm_backends": ("cutlass",), **options}, environ={})


def _calls(gm):
    return [n for n in gm.graph.nodes if n.op == "call_function"
            and n.target in (torch.ops.ait.cutlass_gemm.default, torch.ops.ait.cutlass_gemm_pre.default)]


def test_linear_gelu_on_3d_input_becomes_one_call_viewed_back(tmp_path, stub_build):
    gm = _fake_cuda(lambda x, w, b: F.gelu(F.linear(x, w, b)), (4, 16, 64), (128, 64), (128,))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    (call,) = _calls(gm)
    a, b, bias, residual, library, activation, alpha, beta = call.args
    assert activation == "gelu" and residual is None and bias is not None and (alpha, beta) == (1.0, 1.0)
    assert "float16_rowcol_gelu_" in library
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert aten.gelu.default not in targets and aten.addmm.default not in targets
    output = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    assert output.target is aten.view.default and list(output.args[1]) == [4, 16, 128]
    assert len(stub_build) == 1  # without autotune: the heuristic's one configuration is built


def test_residual_then_relu_is_the_epilogue(tmp_path, stub_build):
    gm = _fake_cuda(lambda x, w, b, r: torch.relu(F.linear(x, w, b) + r), (64, 32), (48, 32), (48,), (64, 48))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    (call,) = _calls(gm)
    assert call.args[5] == "relu" and call.args[3] is not None and call.args[3].op == "placeholder"
    assert "_res_" in call.args[4]


def test_a_pre_activation_read_elsewhere_is_a_second_output(tmp_path, stub_build):
    """Training saves the GEMM's value for GELU's backward: the pre variant stores it."""
    gm = _fake_cuda(lambda x, w, b: (lambda h: (F.gelu(h), h * 2))(F.linear(x, w, b)), (64, 32), (48, 32), (48,))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    (call,) = _calls(gm)
    assert call.target is torch.ops.ait.cutlass_gemm_pre.default
    items = sorted((u.args[1], u) for u in call.users if u.target is operator.getitem)
    assert [i for i, _ in items] == [0, 1]
    doubled = next(n for n in gm.graph.nodes if n.target is aten.mul.Tensor)
    assert doubled.args[0] is items[1][1]  # the saved value is the kernel's second output


def test_what_stays_with_aten(tmp_path, stub_build):
    config = _config(tmp_path)
    bare = _fake_cuda(lambda a, b: a @ b, (64, 32), (32, 48))  # cuBLAS computes exactly this
    assert not _calls(cutlass_pass.cutlass_gemms(bare, config))
    ragged = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (64, 30), (48, 30), (48,))  # K = 30
    assert not _calls(cutlass_pass.cutlass_gemms(ragged, config))
    cpu = make_fx(lambda x, w, b: torch.relu(F.linear(x, w, b)))(torch.randn(64, 32), torch.randn(48, 32), torch.randn(48))
    assert not _calls(cutlass_pass.cutlass_gemms(cpu, config))
    fp64 = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (64, 32), (48, 32), (48,), dtype=torch.float64)
    assert not _calls(cutlass_pass.cutlass_gemms(fp64, config))


def test_without_a_measurement_aten_keeps_the_gemms(tmp_path, stub_build):
    """Several backends and autotune off: no measurement, so cuBLAS (as for the Triton template)."""
    gm = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (64, 32), (48, 32), (48,))
    assert not _calls(cutlass_pass.cutlass_gemms(gm, _config(tmp_path, gemm_backends=("aten", "cutlass"))))
    assert not stub_build


def test_without_a_toolchain_the_pass_logs_once_and_leaves_the_graph(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cutlass_build, "toolchain", lambda: "no nvcc (set CUDA_HOME or AIT_NVCC, or put nvcc on PATH)")
    monkeypatch.setattr(cutlass_build, "_skip_logged", type(cutlass_build._skip_logged)())
    config = _config(tmp_path)
    with caplog.at_level(logging.INFO, logger="ait_dynamo"):
        for _ in range(2):
            gm = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (64, 32), (48, 32), (48,))
            assert not _calls(cutlass_pass.cutlass_gemms(gm, config))
    skips = [r.getMessage() for r in caplog.records if "CUTLASS GEMMs skipped" in r.getMessage()]
    assert len(skips) == 1 and "no nvcc" in skips[0]


def test_toolchain_finds_nvcc_and_headers_from_the_environment(tmp_path, monkeypatch):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    (tmp_path / "cutlass" / "include" / "cutlass").mkdir(parents=True)
    (tmp_path / "cutlass" / "include" / "cutlass" / "cutlass.h").write_text("")
    monkeypatch.setenv("AIT_NVCC", str(nvcc))
    monkeypatch.setenv("AIT_CUTLASS_DIR", str(tmp_path / "cutlass"))
    cutlass_build.toolchain.cache_clear()
    try:
        found = cutlass_build.toolchain()
        assert found == cutlass_build.Toolchain(str(nvcc), str(tmp_path / "cutlass" / "include"))
        monkeypatch.setenv("AIT_CUTLASS_DIR", str(tmp_path / "nowhere"))
        monkeypatch.setattr(cutlass_build.importlib.util, "find_spec", lambda name: None)
        cutlass_build.toolchain.cache_clear()
        assert "no CUTLASS headers" in cutlass_build.toolchain()
    finally:
        cutlass_build.toolchain.cache_clear()


def test_a_failed_build_raises_with_nvcc_s_message(tmp_path, monkeypatch):
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'error: no such template' >&2\nexit 2\n")
    nvcc.chmod(0o755)
    monkeypatch.setattr(cutlass_build, "toolchain", lambda: cutlass_build.Toolchain(str(nvcc), str(tmp_path)))
    (result,) = cutlass_build.build_all(["// source"], str(tmp_path))
    assert isinstance(result, RuntimeError) and "no such template" in str(result)
    assert not any(p.suffix == ".so" for p in tmp_path.rglob("*"))


def test_the_measured_choice_is_kept_and_reused(tmp_path, stub_build, monkeypatch):
    """With autotune, every candidate is measured once against ATen; the winner is stored on disk
    and a second compile reads it (no measurement, only the winner built)."""
    measured = []

    def fake_measure(m, libraries, bench, lt=False, moved=None):
        measured.append(len(libraries))
        assert lt  # ReLU after addmm: cuBLASLt's epilogue is a candidate too
        times = {cutlass_pass._config_name(i): 1.0 + i for i in range(len(libraries))}
        return 1, {**times, cutlass_pass._config_name(1): 0.5, "aten": 0.8}

    monkeypatch.setattr(cutlass_pass, "_measure", fake_measure)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    config = _config(tmp_path, gemm_backends=("aten", "cutlass"), autotune=True)
    fn = lambda x, w, b: torch.relu(F.linear(x, w, b))  # noqa: E731
    first = cutlass_pass.cutlass_gemms(_fake_cuda(fn, (64, 32), (48, 32), (48,)), config)
    assert measured == [len(cutlass_gemm.CONFIGS)] and len(stub_build) == len(cutlass_gemm.CONFIGS)
    (call,) = _calls(first)
    assert "128x128x64_1x1_pingpong" in call.args[4]
    stub_build.clear()
    second = cutlass_pass.cutlass_gemms(_fake_cuda(fn, (64, 32), (48, 32), (48,)), config)
    assert measured == [len(cutlass_gemm.CONFIGS)] and len(stub_build) == 1
    assert _calls(second)[0].args[4] == call.args[4]


def test_aten_is_charged_what_fusing_the_epilogue_saves_in_the_all_aten_plan(tmp_path, stub_build, monkeypatch):
    """fc2 + residual before a LayerNorm: with cuBLAS the add joins the LayerNorm's kernel, so
    ATen's side of the measurement copies 2 tensors (product and residual read, sum written, sum
    read back), not a separate epilogue kernel's 3; the charge is stored with the decision."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ait_dynamo.passes.decompositions import decomposition_table

    config = _config(tmp_path, gemm_backends=("aten", "cutlass"), autotune=True)

    def fn(x, w, b, r):
        s = F.linear(x, w, b) + r
        return s, F.layer_norm(s, (48,))

    with FakeTensorMode(allow_non_fake_inputs=True):
        inputs = [torch.empty(*s, device="cuda", dtype=torch.float16) for s in ((64, 32), (48, 32), (48,), (64, 48))]
        gm = make_fx(fn, decomposition_table=decomposition_table(config), tracing_mode="fake")(*inputs)
    tensor = 64 * 48 * 2
    (m,) = [m for m in (cutlass_pass.match(n) for n in gm.graph.nodes) if m is not None]
    assert cutlass_pass._aten_side_bytes(gm, config, [m]) == {m.gemm: 2 * tensor}
    assert cutlass_pass.separate_epilogue_bytes(m) == 3 * tensor
    charged = []

    def fake_measure(m, libraries, bench, lt=False, moved=None):
        charged.append(moved)
        return 0, {cutlass_pass._config_name(0): 2.0, "aten": 1.0}

    monkeypatch.setattr(cutlass_pass, "_measure", fake_measure)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    cutlass_pass.cutlass_gemms(gm, config)
    assert charged == [2 * tensor]
    (record,) = json.loads(next((tmp_path / "cutlass_gemm").glob("*.json")).read_text()).values()
    assert record["aten_bytes"] == 2 * tensor


def test_aten_faster_keeps_aten(tmp_path, stub_build, monkeypatch):
    monkeypatch.setattr(cutlass_pass, "_measure", lambda m, libraries, bench, lt=False, moved=None: (
        0, {cutlass_pass._config_name(0): 2.0, "aten": 1.0}))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    config = _config(tmp_path, gemm_backends=("aten", "cutlass"), autotune=True)
    gm = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (64, 32), (48, 32), (48,))
    assert not _calls(cutlass_pass.cutlass_gemms(gm, config))


@pytest.mark.parametrize("toolchain", [True, False], ids=["with-cutlass", "without-nvcc"])
def test_cublaslt_epilogue_wins_and_is_kept(tmp_path, stub_build, monkeypatch, toolchain):
    """cuBLASLt's epilogue is measured beside CUTLASS's candidates (and alone without nvcc): where it
    wins, the chain becomes ``_addmm_activation`` (tanh-GELU: ``use_gelu``), viewed back to 3-d."""
    seen = []

    def fake_measure(m, libraries, bench, lt=False, moved=None):
        seen.append((len(libraries), lt))
        return cutlass_pass.CUBLASLT, {cutlass_pass.CUBLASLT: 0.5, "aten": 0.8}

    monkeypatch.setattr(cutlass_pass, "_measure", fake_measure)
    monkeypatch.setattr(cutlass_build, "available", lambda: toolchain)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    config = _config(tmp_path, gemm_backends=("aten", "triton", "cutlass") if toolchain else ("aten", "triton"),
                     autotune=True)
    fn = lambda x, w, b: F.gelu(F.linear(x, w, b), approximate="tanh")  # noqa: E731
    for _ in range(2):  # the second compile reads the stored choice
        gm = cutlass_pass.cutlass_gemms(_fake_cuda(fn, (4, 16, 64), (128, 64), (128,)), config)
        (lt,) = [n for n in gm.graph.nodes if n.target is aten._addmm_activation.default]
        assert lt.kwargs == {"use_gelu": True} and not _calls(gm)
        assert not [n for n in gm.graph.nodes if n.target in (aten.gelu.default, aten.addmm.default)]
        output = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
        assert output.target is aten.view.default and output.args[0] is lt
        gm.graph.lint()
    assert seen == [(len(cutlass_gemm.CONFIGS) if toolchain else 0, True)]
    assert len(stub_build) == (len(cutlass_gemm.CONFIGS) if toolchain else 0)


def test_cublaslt_is_a_candidate_only_where_it_computes_the_chain(tmp_path, stub_build):
    config = _config(tmp_path)
    cases = {  # function -> does _addmm_activation compute it
        "relu": (lambda x, w, b, r: torch.relu(F.linear(x, w, b)), True),
        "erf gelu": (lambda x, w, b, r: F.gelu(F.linear(x, w, b)), False),  # cuBLASLt's GELU is tanh's
        "residual": (lambda x, w, b, r: torch.relu(F.linear(x, w, b) + r), False),
        "no bias": (lambda x, w, b, r: torch.relu(x @ w.t()), False),
    }
    for name, (fn, expected) in cases.items():
        gm = _fake_cuda(fn, (64, 64), (48, 64), (48,), (64, 48))
        found = [m for m in map(cutlass_pass.match, gm.graph.nodes) if m is not None]
        assert [cutlass_pass.lt_applies(m) for m in found] == [expected], name
    # what CUTLASS refuses (K = 30: rows not 16-byte aligned; float32 without TF32) cuBLASLt may compute
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        unaligned, float32 = (((64, 30), (48, 30), (48,)), torch.float16), (((64, 32), (48, 32), (48,)), torch.float32)
        for shapes, dtype in (unaligned, float32):
            gm = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), *shapes, dtype=dtype)
            (m,) = [m for m in map(cutlass_pass.match, gm.graph.nodes) if m is not None]
            assert not m.cutlass and cutlass_pass.lt_applies(m), (shapes, dtype)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_what_cutlass_refuses_is_measured_for_cublaslt_alone(tmp_path, stub_build, monkeypatch):
    """On the H200, float32 addmm + ReLU never reached the measurement: CUTLASS's refusal (no TF32)
    dropped the chain before cuBLASLt was considered."""
    seen = []
    monkeypatch.setattr(cutlass_pass, "_measure", lambda m, libraries, bench, lt=False, moved=None: (
        seen.append((len(libraries), lt)), (cutlass_pass.CUBLASLT, {cutlass_pass.CUBLASLT: 0.5, "aten": 0.8}))[1])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    config = _config(tmp_path, gemm_backends=("aten", "triton", "cutlass"), autotune=True)
    gm = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (64, 30), (48, 30), (48,))  # K = 30
    gm = cutlass_pass.cutlass_gemms(gm, config)
    assert [n for n in gm.graph.nodes if n.target is aten._addmm_activation.default]
    assert seen == [(0, True)] and not stub_build  # nothing built for it


def test_without_aten_or_autotune_cublaslt_is_not_measured(tmp_path, stub_build, monkeypatch):
    monkeypatch.setattr(cutlass_build, "available", lambda: False)
    monkeypatch.setattr(cutlass_pass, "_measure", lambda *a, **k: pytest.fail("measured"))
    fn = lambda x, w, b: torch.relu(F.linear(x, w, b))  # noqa: E731
    for options in ({"gemm_backends": ("aten", "triton")}, {"gemm_backends": ("triton",), "autotune": True}):
        gm = cutlass_pass.cutlass_gemms(_fake_cuda(fn, (64, 32), (48, 32), (48,)), _config(tmp_path, **options))
        assert [n for n in gm.graph.nodes if n.target is aten.addmm.default]


def test_a_saved_product_of_a_3d_linear_is_the_second_output(tmp_path, stub_build):
    """A training forward saves the 2-d addmm (GELU's backward reads it) and views it to 3-d for the
    GELU: the view and the GELU join the kernel; the saved value is its second output, as 2-d."""
    def forward(x, w, b):
        product = torch.ops.aten.addmm.default(b, x.view(200, 64), w.t())
        return F.gelu(product.view(4, 50, 256)), product

    gm = _fake_cuda(forward, (4, 50, 64), (256, 64), (256,))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    (call,) = _calls(gm)
    assert call.target is torch.ops.ait.cutlass_gemm_pre.default and call.args[5] == "gelu"
    outputs = [n for n in gm.graph.nodes if n.op == "output"][0].args[0]
    assert outputs[1].target is operator.getitem and outputs[1].args == (call, 1)
    assert outputs[0].target is aten.view.default and outputs[0].args[0].args == (call, 0)
    assert not [n for n in gm.graph.nodes if n.target in (aten.gelu.default, aten.addmm.default)]


def test_a_value_read_before_the_residual_add_keeps_the_add_out(tmp_path, stub_build):
    gm = _fake_cuda(lambda x, w, b, r: (lambda h: (torch.relu(h + r), h))(F.linear(x, w, b)),
                    (64, 32), (48, 32), (48,), (64, 48))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    (call,) = _calls(gm)
    assert call.args[3] is None and call.args[5] == "identity"  # bias only: h itself is the kernel's result
    assert [n for n in gm.graph.nodes if n.target is aten.add.Tensor]


def test_a_kernel_reads_the_call_that_replaced_its_input(tmp_path, stub_build):
    """The 001 MLP on 2-d input: fc2 reads fc1's GELU itself, which fc1's call replaces. (On the
    H200 the second rewrite once read the erased GELU, and the graph fell back to ATen whole.)"""
    def forward(x, w1, b1, w2, b2, r):
        return torch.relu(F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2) + r)

    gm = _fake_cuda(forward, (64, 32), (128, 32), (128,), (48, 128), (48,), (64, 48))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    first, second = _calls(gm)
    assert first.args[5] == "gelu" and second.args[5] == "relu" and second.args[0] is first
    gm.graph.lint()


def test_a_saved_product_read_by_the_next_gemm_is_the_second_output(tmp_path, stub_build):
    gm = _fake_cuda(lambda x, w1, b1, w2: (lambda h: (F.gelu(h), torch.relu(h @ w2)))(F.linear(x, w1, b1)),
                    (64, 32), (128, 32), (128,), (128, 48))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    first, second = _calls(gm)
    assert first.target is torch.ops.ait.cutlass_gemm_pre.default
    assert second.args[0].target is operator.getitem and second.args[0].args == (first, 1)
    gm.graph.lint()


def test_two_gemms_summed_share_their_add_with_one_call(tmp_path, stub_build):
    """``x @ W + h @ U`` (a recurrent cell): each GEMM's chain ends at the one add; the first takes
    it with the other GEMM as its residual, the second stays a plain GEMM."""
    gm = _fake_cuda(lambda x, w, h, u: torch.tanh(x @ w + h @ u), (64, 32), (32, 48), (64, 16), (16, 48))
    gm = cutlass_pass.cutlass_gemms(gm, _config(tmp_path))
    (call,) = _calls(gm)
    assert call.args[3].target is aten.mm.default and call.args[5] == "tanh"
    gm.graph.lint()


def test_the_wrapper_calls_the_kernel_as_an_extern(tmp_path, stub_build):
    """Through the whole pass list, the planner and the wrapper (fake CUDA tensors): the CUTLASS call
    is an extern bound once, and what it leaves (the second layer's input) plans as before."""
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    def forward(x, w1, b1, w2, b2):
        return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2) * 2.0

    gm = _fake_cuda(forward, (4, 50, 64), (256, 64), (256,), (64, 256), (64,))
    config = _config(tmp_path)
    gm = run_passes(gm, config)
    assert len(_calls(gm)) == 2
    plan, _ = build_plan(gm, config)
    source = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True).source
    # bound once to the Python function (no dispatcher in between), called twice
    assert source.count("_ait_cutlass_gemm_default = __import__('ait_dynamo.kernels.cutlass_gemm', "
                        "fromlist=['call']).call") == 1
    start = source.index("    def call(args):")
    body = source[start:source.index("    call._boxed_call = True", start)]  # the steady-state call
    assert body.count("_ait_cutlass_gemm_default(") == 2 and "addmm" not in body and "gelu(" not in body


class _FailingLibrary:
    """A built kernel whose every call returns CUTLASS's 'cannot implement' (status 1)."""

    calls = 0

    def ait_cutlass_workspace(self, *args):
        return 0

    def ait_cutlass_run(self, *args):
        _FailingLibrary.calls += 1
        return 1


@pytest.mark.parametrize("failure", ["status", "misaligned"])
def test_a_call_cutlass_cannot_run_is_computed_by_aten_with_one_warning(monkeypatch, failure):
    """The program keeps running with right results (one warning per kernel); a measurement
    (strict) gets the error instead, so that a candidate that cannot run is never timed."""
    monkeypatch.setattr(cutlass_build, "load", lambda path: _FailingLibrary())
    monkeypatch.setattr(cutlass_gemm.runtime, "raw_stream", lambda device_index: 0)
    monkeypatch.setattr(cutlass_gemm, "_warned_fallback", set())
    monkeypatch.setattr(cutlass_gemm, "_runners", {})
    a, w, bias = torch.randn(16, 32, dtype=torch.bfloat16), torch.randn(24, 32, dtype=torch.bfloat16), torch.randn(24)
    bias = bias.bfloat16()
    if failure == "misaligned":
        a = torch.randn(16 * 32 + 1, dtype=torch.bfloat16)[1:].view(16, 32)
    library = f"/stub/{failure}.so"
    with pytest.warns(RuntimeWarning, match="ATen computes it") as caught:
        for _ in range(2):
            out, pre = cutlass_gemm.run(library, a, w.t(), bias, None, "gelu", 1.0, 1.0, pre=True)
    assert len([w for w in caught if "CUTLASS" in str(w.message)]) == 1
    value = a.float() @ w.float().t() + bias.float()
    torch.testing.assert_close(pre, value.bfloat16())
    torch.testing.assert_close(out, F.gelu(value).bfloat16())
    with pytest.raises(RuntimeError, match="status 1" if failure == "status" else "aligned"):
        cutlass_gemm.run(library, a, w.t(), bias, None, "gelu", 1.0, 1.0, pre=True, strict=True)


@pytest.mark.parametrize("rows, k, n, expected", [
    (8192, 8192, 8192, "128x256x64_1x2_cooperative"),   # wide and large: the wide tile
    (25088, 3072, 768, "128x128x64_1x1_pingpong"),      # the 002 encoder's fc2 at batch 128
    (1024, 512, 2048, "64x128x64_1x1_pingpong"),        # 001's MLP: few tiles, the small one
])
def test_the_heuristic_follows_the_h200_measurements(tmp_path, stub_build, rows, k, n, expected):
    """Without autotune, the configuration the H200 run found fastest for each of these shapes
    (benchmarks/results/nvidia-h200/cutlass/cutlass_bench.md)."""
    gm = _fake_cuda(lambda x, w, b: torch.relu(F.linear(x, w, b)), (rows, k), (n, k), (n,))
    (call,) = _calls(cutlass_pass.cutlass_gemms(gm, _config(tmp_path)))
    assert expected in call.args[4]
