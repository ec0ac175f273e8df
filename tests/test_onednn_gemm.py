"""oneDNN GEMMs on the CPU (``passes/onednn_gemm.py``): where nothing is generated, mm / addmm run
as ``mkldnn._linear_pointwise`` with a following activation folded in, chosen by measurement
and kept on disk; results against eager and float64, forward and backward."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.passes import onednn_gemm
from utils import check_compiled, needs_cpu_triton

pytestmark = pytest.mark.skipif(onednn_gemm._linear() is None, reason="this torch has no oneDNN")

ALWAYS = {"fusion": False, "onednn_gemms": "always"}
LINEAR = "mkldnn._linear_pointwise.default"


class Block(nn.Module):
    """Linear-GELU-Linear-ReLU-Linear(no bias) with a residual: every foldable case and one that is not."""

    def __init__(self, width: int = 24, hidden: int = 40, approximate: str = "none"):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.down = nn.Linear(hidden, width, bias=False)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.up(x), approximate=self.approximate)
        h = torch.relu(self.mid(h))
        return self.down(h) + x


def _externs(kind: str) -> list[str]:
    return next(g for g in metrics.compiled_graphs if g.name.endswith(kind)).externs


BF16 = pytest.param(torch.bfloat16, id="torch.bfloat16", marks=pytest.mark.skipif(
    torch.bfloat16 not in onednn_gemm.dtypes(), reason="oneDNN has no bf16 kernels for this CPU"))


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=str)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_inference_folds_the_activations(dtype, approximate):
    torch.manual_seed(0)
    model = Block(approximate=approximate).to(dtype).eval()
    with torch.no_grad():
        check_compiled(model, torch.randn(3, 7, 24, dtype=dtype), backward=False, options=ALWAYS)
    externs = _externs("inference")
    assert externs.count(LINEAR) == 3, externs
    # GELU and ReLU went into their GEMMs; nothing of ATen's GEMMs is left
    assert not [e for e in externs if "gelu" in e or "relu" in e or "mm" in e], externs


def test_training_keeps_the_saved_pre_activation_apart():
    """In training the GEMM's result is saved for the activation's backward: the activation stays
    an op of its own; the backward's GEMMs (transposed operands) go through oneDNN as well."""
    torch.manual_seed(0)
    check_compiled(Block(), torch.randn(5, 24, requires_grad=True), options=ALWAYS)
    forward, backward = _externs("forward"), _externs("backward")
    assert forward.count(LINEAR) == 3 and "aten.gelu.default" in forward, forward
    assert backward.count(LINEAR) >= 4 and not [e for e in backward if e.startswith("aten.mm")], backward


def test_odd_shapes_and_a_non_contiguous_operand():
    """Sizes that are no multiple of anything, a batch of one, and a GEMM whose right operand is
    a column slice (not nn.Linear's transposed weight): oneDNN gets a transposed view."""
    torch.manual_seed(0)

    def fn(x, bias, wide):
        w = wide[:, ::2]  # [13, 20], non-contiguous
        return torch.addmm(bias, x, w).sigmoid(), torch.mm(x, w).tanh()

    for rows in (1, 9):
        metrics.reset()
        check_compiled(fn, torch.randn(rows, 13, requires_grad=True), torch.randn(20, requires_grad=True),
                       torch.randn(13, 40, requires_grad=True), options=ALWAYS)
        assert _externs("forward").count(LINEAR) == 2


def test_left_to_aten():
    """A 2-d bias, alpha or beta, float64 and bmm are not oneDNN's linear: untouched."""
    torch.manual_seed(0)

    def fn(x, w, full_bias, x64, w64, batched):
        return (torch.addmm(full_bias, x, w), torch.addmm(full_bias[0], x, w, beta=0.5), torch.mm(x64, w64),
                torch.bmm(batched, batched.transpose(1, 2)))

    check_compiled(fn, torch.randn(6, 5), torch.randn(5, 4), torch.randn(6, 4), torch.randn(6, 5, dtype=torch.float64),
                   torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 3, 5), backward=False, options=ALWAYS)
    assert LINEAR not in _externs("inference")


def test_bf16_stays_with_aten_where_onednn_has_no_bf16_kernels(monkeypatch):
    """A CPU without oneDNN's bf16 kernels refuses ``_linear_pointwise`` in bf16 at run time
    (an AMD EPYC without AVX-512): even when oneDNN is forced, bf16 GEMMs stay with ATen there."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert onednn_gemm.dtypes() == (torch.float32,)
    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(Block().to(torch.bfloat16).eval(), torch.randn(3, 7, 24, dtype=torch.bfloat16),
                       backward=False, options=ALWAYS)
    assert LINEAR not in _externs("inference")


@needs_cpu_triton
def test_nothing_changes_where_kernels_are_generated():
    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(Block().eval(), torch.randn(4, 24), backward=False,
                       options={"fusion": True, "onednn_gemms": "always", "gemm_backends": ("aten",)})
    assert LINEAR not in _externs("inference")


def test_auto_measures_once_and_keeps_the_choice_on_disk(tmp_path, monkeypatch):
    """"auto" times both forms at the graph's shapes; the choice is stored per CPU model and
    shape, and a later compile (a fresh process: the in-memory table cleared) reads it back."""
    measured: list[str] = []
    real_measure = onednn_gemm._measure

    def counting(node, activation, user):
        measured.append(str(node.target))
        return real_measure(node, activation, user)

    monkeypatch.setattr(onednn_gemm, "_measure", counting)
    monkeypatch.setattr(onednn_gemm, "_decisions", {})
    options = {"fusion": False, "onednn_gemms": "auto", "cache_dir": str(tmp_path)}
    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(Block().eval(), torch.randn(64, 24), backward=False, options=options)
    assert len(measured) == 3, measured
    stored = json.loads(next((tmp_path / "onednn_gemm").glob("*.json")).read_text())
    assert len(stored) == 3 and all(isinstance(v, bool) for v in stored.values()), stored
    externs = _externs("inference")
    assert externs.count(LINEAR) == sum(stored.values()), (externs, stored)

    onednn_gemm._decisions.clear()
    with torch.no_grad():
        check_compiled(Block().eval(), torch.randn(64, 24), backward=False, options=options)
    assert len(measured) == 3, "the stored choices were measured again"


def test_a_bad_mode_says_what_is_valid():
    with pytest.raises(ValueError, match="onednn_gemms.*valid values: auto, always, never"):
        AitConfig.create({"onednn_gemms": "sometimes"}, environ={})
