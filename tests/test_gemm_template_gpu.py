"""The Triton GEMM template on CUDA (skipped without a GPU): fp16 / bf16 / fp32 (tf32 on and off)
forward and backward with the template forced, the epilogue fused into one kernel, and the
choice by measurement (gemm_backends aten+triton, autotune) kept on disk and read back."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.kernels import gemm_tuning, runtime
from utils import check_compiled

pytestmark = [pytest.mark.skipif(not runtime.triton_runs_on("cuda"), reason="needs CUDA and Triton"), pytest.mark.usefixtures("generated_kernels_must_not_fail")]

TRITON = {"gemm_backends": ("triton",)}
GEMM_OPS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default"}


def _forward() -> metrics.GraphRecord:
    return [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("m,k,n", [(1000, 515, 257), (128, 64, 256), (1, 1, 33)], ids=["ragged", "aligned", "k1"])
def test_linear_gelu_forward_backward(dtype, m, k, n):
    model = torch.nn.Sequential(torch.nn.Linear(k, n), torch.nn.GELU()).to("cuda", dtype)
    x = torch.randn(m, k, device="cuda", dtype=dtype, requires_grad=True)
    # K up to 1000 over fp16 / bf16 operands that ait's fused backward rounds its own way: judged by
    # the distribution rule (tests/utils.py says why)
    check_compiled(model, x, options=TRITON, rule="distribution")
    forward = _forward()
    assert not GEMM_OPS & set(forward.externs) and len(forward.kernels) == 1, (forward.kernels, forward.externs)


@pytest.mark.parametrize("tf32", [False, True])
def test_fp32_follows_allow_tf32(tf32, tmp_path):
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(300, 200, device="cuda")
        b = torch.randn(200, 100, device="cuda")
        compiled = torch.compile(lambda a, b: torch.relu(a @ b), backend="ait",
                                 options={**TRITON, "debug_dir": str(tmp_path)})
        torch._dynamo.reset()
        got = compiled(a, b)
        expected = torch.relu(a.double() @ b.double()).float()
        # tf32 keeps 10 mantissa bits of each operand; ieee is float32 throughout
        torch.testing.assert_close(got, expected, rtol=(5e-3 if tf32 else 1e-5), atol=(5e-2 if tf32 else 1e-4))
        source = next(tmp_path.glob("*/module.py")).read_text()
        assert ("tf32" if tf32 else "ieee") in source
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def test_bmm_with_epilogue():
    a = torch.randn(3, 100, 70, device="cuda", dtype=torch.float16, requires_grad=True)
    b = torch.randn(3, 70, 90, device="cuda", dtype=torch.float16, requires_grad=True)
    # the elementwise rule flags this one with cuBLAS too (tests/utils.py)
    check_compiled(lambda a, b: torch.bmm(a, b).sigmoid() * 3.0, a, b, options=TRITON, rule="distribution")
    assert not GEMM_OPS & set(_forward().externs)


def test_measured_choice_is_stored_and_reused(tmp_path):
    """Default backends with autotune: each GEMM is measured once (template vs cuBLAS + epilogue
    copy), the decision lands under cache_dir/gemm_choice/, results stay right either way, and a
    second compile reads the decision instead of measuring."""
    options = {"autotune": True, "cache_dir": str(tmp_path)}
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
    model = model.to("cuda", torch.float16)
    x = torch.randn(1024, 512, device="cuda", dtype=torch.float16)
    gemm_tuning._decisions.clear()
    with torch.no_grad():
        check_compiled(model, x, options=options, backward=False)
    files = list((tmp_path / "gemm_choice").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert len(stored) == 2 and all({"template_ms", "aten_ms", "template"} <= set(v) for v in stored.values())
    before = files[0].stat().st_mtime_ns
    gemm_tuning._decisions.clear()
    with torch.no_grad():
        check_compiled(model, x, options=options, backward=False)
    assert files[0].stat().st_mtime_ns == before  # read back, not measured again


def test_default_backends_without_autotune_keep_cublas():
    x = torch.randn(64, 32, device="cuda", dtype=torch.float16)
    w = torch.randn(48, 32, device="cuda", dtype=torch.float16)
    check_compiled(lambda x, w: F.relu(F.linear(x, w)), x, w, backward=False)
    graph = metrics.compiled_graphs[-1]  # an inference graph: nothing requires grad
    assert "aten.mm.default" in graph.externs and len(graph.kernels) == 1, (graph.externs, graph.kernels)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_persistent_tma_path(dtype, monkeypatch):
    """The template's persistent path (one program per SM, operands through tensor descriptors)
    forced as the heuristic's configuration: forward and backward right in each dtype, and the
    launches took it. Skipped where the installed Triton has no device-side descriptors."""
    from ait_dynamo.kernels import codegen_gemm, gemm_configs

    if not codegen_gemm.tma_supported():
        pytest.skip("Triton without tl.make_tensor_descriptor")
    monkeypatch.setattr(gemm_configs, "heuristic", lambda batch, m, n, k, dtype: (128, 128, 32, 8, 4, 3, 1))
    launches = []
    launch = runtime.launch

    def recording(kernel, grid, args, constexprs, num_warps, num_stages=None):
        launches.append(dict(constexprs))
        return launch(kernel, grid, args, constexprs, num_warps, num_stages)

    monkeypatch.setattr(runtime, "launch", recording)
    model = torch.nn.Sequential(torch.nn.Linear(264, 520), torch.nn.GELU()).to("cuda", dtype)
    x = torch.randn(1000, 264, device="cuda", dtype=dtype, requires_grad=True)
    check_compiled(model, x, options=TRITON, rule="distribution")
    assert any(launch.get("PERSISTENT") == 1 for launch in launches), launches
