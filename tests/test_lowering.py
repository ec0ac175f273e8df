"""The seeds' lowering API (``ait_dynamo.lower``, ``LowerSettings``, ``@ait_dynamo.fallback``):
the split, its children, the seed 000 example, and the same marks under ``torch.compile``."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

import ait_dynamo
from ait_dynamo import LowerSettings, metrics
from benchmarks.models import LoweringModel, unsupported_attention_op
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _lowerer(example_inputs, **settings):
    return lambda model: ait_dynamo.lower(model, example_inputs, LowerSettings(**settings))


def _children(lowered) -> list[str]:
    return [name for name, _ in lowered.named_children()]


def test_seed_000_example_splits_into_eager_attention_and_ait_rest(tmp_path):
    torch.manual_seed(0)
    model = LoweringModel(32, 4, 64).to(DEVICE).eval()
    x = torch.randn(2, 7, 32, device=DEVICE)
    lowered = ait_dynamo.lower(model, (x,), LowerSettings(workdir=str(tmp_path), name="test_ait_lower",
                                                          min_acc_module_size=0))
    assert _children(lowered) == ["_run_on_gpu_0", "_run_on_acc_1"]
    eager_part = lowered._run_on_gpu_0
    assert [n.target for n in eager_part.graph.nodes if n.op == "call_function"] == [unsupported_attention_op]
    assert "_run_on_acc_1" in str(lowered) and "_run_on_gpu_0" in str(lowered)
    torch.testing.assert_close(lowered(x), model(x), rtol=1.3e-5, atol=1e-5)  # the seed's check
    assert metrics.graphs_compiled == 1 and metrics.generated_kernels >= 2  # only the acc child compiled
    assert "aten.bmm.default" not in metrics.compiled_graphs[-1].externs  # the attention did not go there
    dump = (tmp_path / "test_ait_lower" / "lowered.txt").read_text()
    assert "_run_on_gpu_0 (eager)" in dump and "_run_on_acc_1 (ait)" in dump
    assert os.listdir(tmp_path / "test_ait_lower" / "_run_on_acc_1")  # ait's debug dump of that child


def test_lowered_model_forward_and_backward_against_fp64():
    torch.manual_seed(0)
    model = LoweringModel(32, 4, 64).to(DEVICE)
    x = torch.randn(3, 5, 32, device=DEVICE, requires_grad=True)
    check_compiled(model, x, compiler=_lowerer((x,), min_acc_module_size=0))


def test_small_accelerated_parts_stay_eager():
    torch.manual_seed(0)
    model = LoweringModel(32, 4, 64).to(DEVICE).eval()
    x = torch.randn(2, 7, 32, device=DEVICE)
    lowered = ait_dynamo.lower(model, (x,), LowerSettings(min_acc_module_size=1000))
    assert _children(lowered) == ["_run_on_gpu_0"]
    torch.testing.assert_close(lowered(x), model(x))
    assert metrics.graphs_compiled == 0


@ait_dynamo.fallback
class GatedNorm(nn.Module):
    """A module class the user keeps in eager."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * torch.sigmoid(x)


class Sandwich(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.first, self.last = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.gate = GatedNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.first(x)) * 2 + 1
        return self.last(self.gate(y)).tanh() - y


def test_a_marked_module_class_runs_eagerly_in_graph_order():
    torch.manual_seed(0)
    x = torch.randn(4, 16, device=DEVICE, requires_grad=True)
    model = Sandwich().to(DEVICE)
    lowered = ait_dynamo.lower(model, (x,), LowerSettings(min_acc_module_size=2))
    assert _children(lowered) == ["_run_on_acc_0", "_run_on_gpu_1", "_run_on_acc_2"]
    assert [type(m).__name__ for m in lowered._run_on_gpu_1.children()] == ["GatedNorm"]
    check_compiled(model, x, compiler=_lowerer((x,), min_acc_module_size=2))


def test_fallback_ops_apply_inside_the_accelerated_parts():
    torch.manual_seed(0)
    x = torch.randn(4, 16, device=DEVICE)
    lowered = ait_dynamo.lower(Sandwich().to(DEVICE).eval(), (x,),
                               LowerSettings(min_acc_module_size=2, fallback_ops=("aten.relu",)))
    with torch.no_grad():
        lowered(x)
    assert any("aten.relu.default" in g.externs for g in metrics.compiled_graphs)


def test_under_torch_compile_a_marked_function_is_a_graph_break():
    torch.manual_seed(0)
    model = LoweringModel(32, 4, 64).to(DEVICE)
    x = torch.randn(2, 7, 32, device=DEVICE, requires_grad=True)
    check_compiled(model, x)
    kinds = [g.kind for g in metrics.compiled_graphs]
    assert kinds.count("forward") == 1 and kinds.count("backward") == 1  # the part after the break
    assert all("aten.bmm.default" not in g.externs for g in metrics.compiled_graphs)


def test_min_acc_module_size_means_the_same_under_torch_compile():
    x = torch.randn(4, 8, device=DEVICE)
    check_compiled(lambda t: t.sin() + 1, x, backward=False, options={"min_acc_module_size": 5})
    assert metrics.eager_graphs == 1 and metrics.graphs_compiled == 0
    check_compiled(lambda t: t.sin() + 1, x, backward=False, options={"min_acc_module_size": 2})
    assert metrics.graphs_compiled == 1


def test_settings_are_validated():
    with pytest.raises(ValueError, match="min_acc_module_size"):
        LowerSettings(min_acc_module_size=-1)
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        LowerSettings(options={"bogus": 1})
    with pytest.raises(ValueError, match="names no aten op"):
        LowerSettings(fallback_ops=("aten.not_an_op",))
    with pytest.raises(TypeError, match="nn.Module classes"):
        ait_dynamo.fallback(42)
