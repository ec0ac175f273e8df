"""CUTLASS GEMMs on an SM90 GPU (skipped without one, or without nvcc and CUTLASS's headers):
each epilogue kind in fp16, bf16 and fp32 (TF32) against ATen and float64, odd batch and row
counts; a model through torch.compile with the GEMMs forced to CUTLASS, forward and backward
(the saved pre-activation as the kernel's second output); the measured choice kept on disk.

Kernels are built into the default cache folder, so that a run after
``python -m benchmarks cutlass`` (``benchmarks/cutlass_bench.py``, which builds the same kinds) finds them
there: each costs about a minute of nvcc."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import cutlass_build, cutlass_gemm
from utils import assert_close_to_reference, check_compiled

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                       reason="needs an SM90 GPU"),
    pytest.mark.skipif(not isinstance(cutlass_build.toolchain(), cutlass_build.Toolchain),
                       reason="needs nvcc and CUTLASS's headers"),
]

CACHE = AitConfig.create({}, environ={}).cache_dir
CUTLASS = {"gemm_backends": ("cutlass",)}
SMALL = 3  # CONFIGS[3], 64x128 ping-pong: what the heuristic gives these small problems
KINDS = [(dtype, "row", "col", activation, residual, pre)
         for dtype in (torch.float16, torch.bfloat16, torch.float32)
         for activation, residual, pre in (("identity", False, False), ("relu", True, False), ("gelu", False, True))]
KINDS.append((torch.float16, "col", "row", "silu", False, False))


def prebuild(extra: list[str] = ()) -> None:
    """Build every kernel these tests use, and ``extra`` sources, in parallel, once (the device
    scripts call this first: builds at once in one process share the CPUs and memory)."""
    sources = [cutlass_gemm.specs(*kind)[SMALL].source() for kind in KINDS]
    sources += [s.source() for s in cutlass_gemm.specs(torch.float16, "row", "col", "gelu", False, False)]
    sources.append(cutlass_gemm.specs(torch.float16, "row", "col", "relu", False, False)[SMALL].source())  # 2-d MLP
    sources = sorted(set(sources) | set(extra))
    started = time.perf_counter()
    results = cutlass_build.build_all(sources, CACHE)
    print(f"{len(sources)} kernels in {time.perf_counter() - started:.1f} s", flush=True)
    for source, result in zip(sources, results):
        print(source.splitlines()[0], "->", result, flush=True)


def _library(spec: cutlass_gemm.Spec) -> str:
    path = cutlass_build.build_all([spec.source()], CACHE)[0]
    assert isinstance(path, str), path
    return path


@pytest.fixture(autouse=True)
def _tf32():
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # CUTLASS takes float32 as TF32 only
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("activation, residual, pre", [("identity", False, False), ("relu", True, False),
                                                       ("gelu", False, True)])
@pytest.mark.parametrize("batch, m, k, n", [(None, 1000, 520, 264), (None, 1, 64, 8), (3, 77, 128, 40)])
def test_kernel_against_aten_and_float64(dtype, activation, residual, pre, batch, m, k, n):
    torch.manual_seed(0)
    lead = () if batch is None else (batch,)
    a = torch.randn(*lead, m, k, device="cuda", dtype=dtype)
    b = torch.randn(*lead, n, k, device="cuda", dtype=dtype).transpose(-1, -2)  # K contiguous
    bias = torch.randn(n, device="cuda", dtype=dtype)
    res = torch.randn(*lead, m, n, device="cuda", dtype=dtype) if residual else None
    assert cutlass_gemm.refusal(a, b, bias, res, dtype) is None
    spec = cutlass_gemm.specs(dtype, "row", "col", activation, residual, pre)[SMALL]
    out, aux = cutlass_gemm.run(_library(spec), a, b, bias, res, activation, 0.5, 1.0, pre)

    def chain(cast):
        value = torch.matmul(cast(a), cast(b)) * 0.5 + cast(bias)
        if res is not None:
            value = value + cast(res)
        return cutlass_gemm.apply_activation(value, activation), value

    expected, reference = chain(lambda t: t), chain(lambda t: t.double())
    got = (out, aux) if pre else (out,)
    if dtype == torch.float32:
        # CUTLASS computes float32 as TF32 (10-bit mantissas), as allow_tf32 permits; eager's cuBLAS
        # may not (a GEMV at M = 1 stays in float32), so eager's own error is no bound here: TF32's is
        # (the Triton template's float32 test takes the same tolerances)
        for value, ref in zip(got, reference):
            torch.testing.assert_close(value, ref.float(), rtol=5e-3, atol=5e-2)
        return
    assert_close_to_reference(list(got), list(expected[:len(got)]), list(reference[:len(got)]), "cutlass",
                              rule="distribution")


def test_row_major_weight_and_transposed_input():
    """B with N contiguous (a @ W) and A with M contiguous: the other two layouts."""
    a = torch.randn(256, 192, device="cuda", dtype=torch.float16).t().contiguous().t()
    b = torch.randn(192, 136, device="cuda", dtype=torch.float16)
    assert cutlass_gemm.operand_layout(a)[0] == "col" and cutlass_gemm.operand_layout(b)[0] == "row"
    spec = cutlass_gemm.specs(torch.float16, "col", "row", "silu", False, False)[SMALL]
    out, _ = cutlass_gemm.run(_library(spec), a, b, None, None, "silu", 1.0, 1.0, False)
    assert_close_to_reference([out], [F.silu(a @ b)], [F.silu(a.double() @ b.double())], "cutlass", rule="distribution")


def test_a_misaligned_operand_is_computed_by_aten_with_one_warning():
    storage = torch.randn(64 * 64 + 1, device="cuda", dtype=torch.float16)
    a = storage[1:].view(64, 64)  # 2 bytes off a 16-byte boundary
    w = torch.randn(32, 64, device="cuda", dtype=torch.float16)
    spec = cutlass_gemm.specs(torch.float16, "row", "col", "relu", True, False)[SMALL]
    with pytest.warns(RuntimeWarning, match="16-byte aligned"):
        out, _ = cutlass_gemm.run(_library(spec), a, w.t(), None, a[:, :32], "relu", 1.0, 1.0, False)
    torch.testing.assert_close(out, torch.relu(a @ w.t() + a[:, :32]), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_mlp_forward_backward_through_torch_compile(dtype):
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).to("cuda", dtype)
    x = torch.randn(4, 50, 64, device="cuda", dtype=dtype, requires_grad=True)
    check_compiled(model, x, options={**CUTLASS, "cache_dir": CACHE}, rule="distribution")
    forward = [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]
    assert "ait.cutlass_gemm_pre.default" in forward.externs, forward.externs  # GELU's input is saved
    assert "aten.gelu.default" not in forward.externs + forward.fused_ops


def test_two_linears_on_2d_input_both_take_cutlass_without_a_fallback():
    """The 001 MLP's shape (2-d input: fc2 reads fc1's GELU itself). On the H200 the second rewrite
    once read the erased GELU, and the whole graph fell back to ATen with a warning."""
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64), torch.nn.ReLU())
    model = model.to("cuda", torch.float16).eval().requires_grad_(False)
    x = torch.randn(200, 64, device="cuda", dtype=torch.float16)
    check_compiled(model, x, backward=False, options={**CUTLASS, "cache_dir": CACHE}, rule="distribution")
    graph = [g for g in metrics.compiled_graphs if g.kind == "inference"][-1]
    assert graph.fallback_reason is None, graph.fallback_reason
    assert graph.externs.count("ait.cutlass_gemm.default") == 2, graph.externs


def test_measured_choice_is_stored(tmp_path, monkeypatch):
    a = torch.randn(512, 256, device="cuda", dtype=torch.float16)
    w = torch.randn(384, 256, device="cuda", dtype=torch.float16)
    bias = torch.randn(384, device="cuda", dtype=torch.float16)
    options = {"gemm_backends": ("aten", "cutlass"), "autotune": True, "cache_dir": str(tmp_path)}
    build_all = cutlass_build.build_all
    monkeypatch.setattr(cutlass_build, "build_all", lambda sources, cache_dir: build_all(sources, CACHE))  # built once
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, w, b: F.gelu(F.linear(a, w, b)), backend="ait", options=options)
    torch.testing.assert_close(compiled(a, w, bias), F.gelu(F.linear(a, w, bias)), rtol=2e-3, atol=2e-3)
    (stored,) = (tmp_path / "cutlass_gemm").glob("*.json")
    (record,) = json.loads(stored.read_text()).values()
    assert "aten" in record["times_ms"] and len(record["times_ms"]) == len(cutlass_gemm.CONFIGS) + 1, record
