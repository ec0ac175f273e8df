"""cuBLASLt's own epilogue (``aten._addmm_activation``) as a candidate of the measured GEMM choice
(``passes/cutlass_gemm.py``) on CUDA: where it is chosen, the compiled model agrees with eager and
float64, forward and backward, and the measurement is stored with its time. Needs no nvcc."""

from __future__ import annotations

import json

import pytest
import torch

from ait_dynamo import metrics
from ait_dynamo.passes import cutlass_gemm as cutlass_pass
from utils import check_compiled

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("activation, training", [(torch.nn.ReLU(), True), (torch.nn.GELU(approximate="tanh"), False)],
                         ids=["relu-training", "gelu_tanh-inference"])
def test_chosen_cublaslt_epilogue_agrees_forward_and_backward(tmp_path, monkeypatch, dtype, activation, training):
    """The measurement is made to prefer cuBLASLt (a bench that ranks the calls in the order
    made: cuBLASLt's, then ATen's form), so that the rewrite runs whatever this GPU's timings.
    (Training with GELU saves the product for GELU's backward, which ``_addmm_activation`` does
    not return: there CUTLASS's second output or ATen computes it.)"""
    times = iter([0.1, 1.0] * 4)
    real_measure = cutlass_pass._measure
    monkeypatch.setattr(cutlass_pass, "_measure", lambda m, libraries, bench, lt=False, moved=None:
                        real_measure(m, libraries, lambda fn: (fn(), next(times))[1], lt, moved))
    model = torch.nn.Sequential(torch.nn.Linear(96, 200), activation, torch.nn.Linear(200, 40)).to("cuda", dtype)
    model.requires_grad_(training)
    x = torch.randn(37, 96, device="cuda", dtype=dtype, requires_grad=training)
    options = {"gemm_backends": ("aten", "triton"), "autotune": True, "cache_dir": str(tmp_path)}
    check_compiled(model, x, backward=training, options=options, rule="distribution")
    forward = [g for g in metrics.compiled_graphs if g.kind in ("forward", "inference")][-1]
    assert "aten._addmm_activation.default" in forward.externs, forward.externs
    (stored,) = (tmp_path / "cutlass_gemm").glob("*.json")
    (record,) = json.loads(stored.read_text()).values()
    assert {k: record[k] for k in ("best", "times_ms")} == {"best": cutlass_pass.CUBLASLT,
                                                          "times_ms": {cutlass_pass.CUBLASLT: 0.1, "aten": 1.0}}
    assert "aten_bytes" in record, record


def test_measured_without_a_stub_it_keeps_the_faster(tmp_path):
    """A real measurement: whichever wins, the result is right and the stored times name both."""
    x = torch.randn(512, 256, device="cuda", dtype=torch.float16)
    w = torch.randn(384, 256, device="cuda", dtype=torch.float16)
    b = torch.randn(384, device="cuda", dtype=torch.float16)
    torch._dynamo.reset()
    fn = torch.compile(lambda x, w, b: torch.relu(torch.nn.functional.linear(x, w, b)), backend="ait",
                       options={"gemm_backends": ("aten", "triton"), "autotune": True, "cache_dir": str(tmp_path)})
    torch.testing.assert_close(fn(x, w, b), torch.relu(torch.nn.functional.linear(x, w, b)), rtol=2e-3, atol=2e-3)
    (stored,) = (tmp_path / "cutlass_gemm").glob("*.json")
    (record,) = json.loads(stored.read_text()).values()
    assert set(record["times_ms"]) == {cutlass_pass.CUBLASLT, "aten"}, record
