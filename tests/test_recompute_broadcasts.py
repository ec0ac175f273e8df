"""passes/recompute_broadcasts.py: a cheap pointwise value read by several kernels is recomputed in
each of them from its smaller inputs, never written; where its inputs are as large as it, it is
written once as before. Structure from the plan, results against eager."""

from __future__ import annotations

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo.config import AitConfig
from ait_dynamo.kernels.runtime import triton_runs_on
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.pipeline import run_passes
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.plan_memory import live_bytes
from ait_dynamo.passes.recompute_broadcasts import recompute_broadcast_values
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")


def _conv(value):
    return torch.nn.functional.conv2d(value, torch.ones(3, 3, 1, 1, device=value.device, dtype=value.dtype))


def _pool_gradient(grad, mask, x, y):
    """ResNet-50's backward start, small: the average pool's gradient through the last ReLU, read
    by three kernels, each after a convolution that needs the kernel before it."""
    return _pool_gradient_of(torch.where(mask, 0.0, grad[:, :, None, None].expand(-1, -1, 5, 6) / 30), x, y)


def _pool_gradient_of(g, x, y):
    first = _conv(g * x)
    second = _conv((g - first).exp())
    return (g + second + y).relu()


def _inputs():
    mask = torch.rand(4, 3, 5, 6, device=DEVICE) > 0.4
    return (torch.randn(4, 3, device=DEVICE), mask, torch.randn(4, 3, 5, 6, device=DEVICE),
            torch.randn(4, 3, 5, 6, device=DEVICE))


def _plan(fn, *args):
    gm = make_fx(fn)(*args)
    config = AitConfig.create({}, environ={})
    return build_plan(run_passes(gm, config), config)[0]


def _written(plan) -> list[str]:
    return [n.name for s in plan.steps if isinstance(s, FusionGroup) for n in s.outputs]


def test_a_masked_broadcast_read_by_three_kernels_is_never_written():
    plan = _plan(_pool_gradient, *_inputs())
    assert not [name for name in _written(plan) if name.startswith("where")], plan.describe()
    wheres = [n for s in plan.steps if isinstance(s, FusionGroup) for n in s.nodes if n.name.startswith("where")]
    assert len(wheres) == 3, plan.describe()  # computed in each reader's kernel


def test_the_copies_lower_the_plans_memory(monkeypatch):
    from ait_dynamo.passes import pipeline

    plan = _plan(_pool_gradient, *_inputs())
    monkeypatch.setattr(pipeline, "PASSES", [p for p in pipeline.PASSES if p is not recompute_broadcast_values])
    written = _plan(_pool_gradient, *_inputs())
    assert any(name.startswith("where") for name in _written(written)), written.describe()
    assert max(live_bytes(plan)) < max(live_bytes(written))


def test_a_value_whose_inputs_are_as_large_is_written_once():
    """Computed from two full-size float32 tensors, the value is no larger than what recomputing
    it reads: the graph keeps one copy, which its first kernel writes."""

    def full_size(z, m, x, y):
        return _pool_gradient_of(z * 2 + m, x, y)

    args = [torch.randn(4, 3, 5, 6, device=DEVICE) for _ in range(4)]
    gm = make_fx(full_size)(*args)
    before = len(gm.graph.nodes)
    assert len(recompute_broadcast_values(gm, AitConfig.create({}, environ={})).graph.nodes) == before
    plan = _plan(full_size, *args)
    assert [name for name in _written(plan) if name.startswith("add")], plan.describe()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recomputed_values_match_eager(dtype):
    """Forward and backward (whose gradient of ``grad`` sums the three readers' shares)."""
    grad, mask, x, y = _inputs()
    grad, x, y = (t.to(dtype).requires_grad_() for t in (grad, x, y))
    check_compiled(_pool_gradient, grad, mask, x, y)


def test_readers_with_no_aten_call_between_get_no_copy():
    """Two readers with no ATen call between them may share a kernel (a LayerNorm's mean and
    normalisation): the value stays one, for the planner to fuse."""

    def adjacent(grad, mask, x, y):
        g = torch.where(mask, 0.0, grad[:, :, None, None].expand(-1, -1, 5, 6) / 30)
        return (g * x).sum((0, 2, 3)), (g + y).relu()

    gm = make_fx(adjacent)(*_inputs())
    before = len(gm.graph.nodes)
    assert len(recompute_broadcast_values(gm, AitConfig.create({}, environ={})).graph.nodes) == before
    gm = recompute_broadcast_values(make_fx(_pool_gradient)(*_inputs()), AitConfig.create({}, environ={}))
    wheres = [n for n in gm.graph.nodes if n.target is torch.ops.aten.where.self]
    assert len(wheres) == 3 and all(len(n.users) == 1 for n in wheres)  # one per reader behind a convolution
