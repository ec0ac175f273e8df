"""GEMM shape padding (``passes/pad_gemm.py``): exact results, the padded GEMM in the graph, the
slice read in place by the consuming kernel, and the measured decision on CUDA."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn

from ait_dynamo import metrics
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")
ALWAYS = {"pad_gemms": "always"}


def _pads() -> int:
    """Pads in the compiled graphs: ATen calls, or (where kernels are generated) fused masked loads."""
    return sum(op == "aten.constant_pad_nd.default" for g in metrics.compiled_graphs for op in g.externs + g.fused_ops)


class OddLinear(nn.Module):
    def __init__(self, features_in: int = 13, features_out: int = 21):
        super().__init__()
        self.linear = nn.Linear(features_in, features_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) * 2.0


@pytest.mark.parametrize("shape", [(6, 13), (1, 13), (4, 5, 13)], ids=["rows6", "row1", "batched"])
def test_padded_linear_forward_and_backward(shape):
    torch.manual_seed(0)
    check_compiled(OddLinear().to(DEVICE), torch.randn(*shape, device=DEVICE, requires_grad=True), options=ALWAYS)
    assert _pads() >= 2, [g.externs for g in metrics.compiled_graphs]  # forward and backward GEMMs


def test_a_transposed_weight_is_padded_in_its_own_memory_order():
    """nn.Linear hands mm t(W): the pad copies W row by row and transposes back, so that the padded
    operand keeps W's memory order (no transposing copy of the whole weight) and stays exact."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.config import AitConfig
    from ait_dynamo.passes.pad_gemm import pad_gemms

    x, w = torch.randn(6, 13), torch.randn(21, 13)  # K = 13, N = 21: both padded in float32 (to 16, 24)
    gm = make_fx(lambda x, w: torch.mm(x, w.t()), tracing_mode="fake")(x, w)
    pad_gemms(gm, AitConfig.create(ALWAYS, environ={}))
    pads = [n for n in gm.graph.nodes if n.target is torch.ops.aten.constant_pad_nd.default]
    padded_b = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.mm.default).args[1]
    assert padded_b.target is torch.ops.aten.transpose.int and padded_b.args[0] in pads
    meta = padded_b.meta["val"]
    assert tuple(meta.shape) == (16, 24) and meta.stride() == (1, 16), (meta.shape, meta.stride())
    torch.testing.assert_close(gm(x, w), x @ w.t())


def test_a_transposed_first_operand_pads_its_rows_once():
    """A weight gradient ``dY.t() @ X`` reads dY transposed: its leading dimension is M (GPT-2's
    vocabulary, 50257), so M is padded, and the pad of dY is the one the input gradient ``dY @ W``
    (K = 50257) made: one copy for both GEMMs. The M rows slice off as a contiguous view."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.config import AitConfig
    from ait_dynamo.passes.pad_gemm import pad_gemms

    dy, w, x = torch.randn(8, 13), torch.randn(13, 12), torch.randn(8, 12)  # M = K = 13 in float32: to 16
    gm = make_fx(lambda dy, w, x: (torch.mm(dy, w), torch.mm(dy.t(), x)), tracing_mode="fake")(dy, w, x)
    pad_gemms(gm, AitConfig.create(ALWAYS, environ={}))
    aten = torch.ops.aten
    pads = [n for n in gm.graph.nodes if n.target is aten.constant_pad_nd.default]
    assert [p.args[0].name for p in pads].count("dy_1") == 1, [(p.args[0].name, p.args[1]) for p in pads]
    gemms = [n for n in gm.graph.nodes if n.target is aten.mm.default]
    assert tuple(gemms[1].args[0].meta["val"].shape) == (16, 8) and gemms[1].args[0].meta["val"].stride() == (1, 16)
    for got, want in zip(gm(dy, w, x), (dy @ w, dy.t() @ x)):
        torch.testing.assert_close(got, want)
        assert got.is_contiguous()


def test_padded_mm_and_bmm():
    torch.manual_seed(0)
    a = torch.randn(7, 9, device=DEVICE, requires_grad=True)
    b = torch.randn(9, 11, device=DEVICE, requires_grad=True)
    check_compiled(lambda x, y: (x @ y).sin(), a, b, options=ALWAYS)
    p = torch.randn(3, 5, 7, device=DEVICE, requires_grad=True)
    q = torch.randn(3, 7, 6, device=DEVICE, requires_grad=True)
    check_compiled(lambda x, y: torch.bmm(x, y) + 1, p, q, options=ALWAYS)
    assert _pads() >= 2


def test_aligned_gemms_and_the_never_mode_are_untouched():
    torch.manual_seed(0)
    check_compiled(lambda x, y: x @ y, torch.randn(8, 16, device=DEVICE), torch.randn(16, 12, device=DEVICE),
                   options=ALWAYS)
    check_compiled(OddLinear().to(DEVICE), torch.randn(4, 13, device=DEVICE, requires_grad=True),
                   options={"pad_gemms": "never"})
    assert _pads() == 0


@pytest.mark.skipif(DEVICE == "cuda", reason="on CUDA, auto measures")
def test_auto_never_pads_off_cuda():
    check_compiled(OddLinear(), torch.randn(4, 13, requires_grad=True))
    assert _pads() == 0


@needs_triton
def test_the_slice_is_read_in_place_by_the_consumer():
    torch.manual_seed(0)
    check_compiled(lambda x, y: torch.relu(x @ y), torch.randn(6, 9, device=DEVICE), torch.randn(9, 10, device=DEVICE),
                   backward=False, options=ALWAYS)
    graph = metrics.compiled_graphs[-1]
    assert "aten.clone.default" in graph.fused_ops and "aten.clone.default" not in graph.externs


def test_bad_mode_is_a_clear_error():
    from ait_dynamo.config import AitConfig

    with pytest.raises(ValueError, match="valid values: auto, always, never"):
        AitConfig.create({"pad_gemms": "sometimes"})


@pytest.mark.gpu
def test_auto_measures_once_and_keeps_the_choice(tmp_path):
    """GPT-2's LM head shape (N = 50257): measured once, the choice stored per device and shape."""
    x = torch.randn(512, 768, device="cuda", dtype=torch.float16)
    w = torch.randn(50257, 768, device="cuda", dtype=torch.float16)
    options = {"cache_dir": str(tmp_path)}
    check_compiled(lambda a, b: a @ b.t(), x, w, backward=False, options=options)
    files = os.listdir(tmp_path / "gemm_padding")
    assert len(files) == 1
    choices = json.load(open(tmp_path / "gemm_padding" / files[0]))
    assert len(choices) == 1 and isinstance(next(iter(choices.values())), bool)
    padded = _pads() > 0
    assert padded == next(iter(choices.values()))


def test_addmm_with_a_scalar_or_broadcast_bias_is_padded_without_error():
    """OpInfo's addmm samples on the H200: a 0-dim bias made the rewrite index ``shape[-1]`` of
    a 0-dim tensor (IndexError; ait fell back to ATen with a warning)."""
    torch.manual_seed(0)
    a, b = torch.randn(5, 7, device=DEVICE), torch.randn(7, 3, device=DEVICE)
    for bias in (torch.randn((), device=DEVICE), torch.randn(1, device=DEVICE), torch.randn(5, 1, device=DEVICE),
                 torch.randn(3, device=DEVICE)):
        before = metrics.fallbacks
        check_compiled(lambda c, x, y: torch.addmm(c, x, y, beta=1, alpha=1), bias, a, b, backward=False, options=ALWAYS)
        assert metrics.fallbacks == before
        assert _pads() >= 1


def test_measurement_operands_keep_broadcast_strides():
    """The timing run makes random operands with the graph's strides; an expanded (stride 0)
    operand used to fail in ``normal_`` (a fallback with a warning for matmul and linear)."""
    from ait_dynamo.passes.graph_utils import random_like

    expanded = torch.empty(3, 1, device=DEVICE).expand(3, 5)
    operand = random_like(expanded)
    assert operand.shape == expanded.shape and operand.stride() == expanded.stride()
    assert torch.isfinite(operand).all() and (operand[:, 0:1] == operand).all()
    empty = random_like(torch.empty(0, 4, device=DEVICE))
    assert empty.shape == (0, 4)
