"""The plan's memory model (passes/plan_memory.py): bytes alive per step, checked by hand."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo.config import AitConfig
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.pipeline import run_passes
from ait_dynamo.passes.plan_memory import live_bytes, plan_storages, storage_bytes

F32 = 4


def _plan(fn, *args):
    gm = make_fx(fn)(*args)
    config = AitConfig.create({}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    return plan


def _step(plan, name: str) -> int:
    (index,) = [i for i, step in enumerate(plan.steps) if step.name == name]
    return index


def test_storage_bytes_spans_strides_and_broadcasts():
    assert storage_bytes(torch.empty(3, 5)) == 15 * F32
    assert storage_bytes(torch.empty(3, 5).t()) == 15 * F32
    assert storage_bytes(torch.empty(4, 1).expand(4, 6)) == 4 * F32  # stride 0: no new bytes
    assert storage_bytes(torch.empty(0, 5)) == 0
    assert storage_bytes(torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last)) == 120 * F32
    assert storage_bytes(None) == 0 and storage_bytes(3) == 0


def test_each_gradient_of_a_tuple_result_dies_with_its_own_getitem():
    """convolution_backward's input gradient lives while the tuple's name does (the wrapper holds
    it until both getitems are taken), then dies: it was read by the sum before. The weight
    gradient lives on until the kernel that doubles it."""

    def fn(g, x, w):
        grads = torch.ops.aten.convolution_backward(g, x, w, [0], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                     [True, True, False])
        return grads[0].sum(), grads[1] * 2

    g, x, w = torch.randn(1, 2, 6, 6), torch.randn(1, 3, 8, 8), torch.randn(2, 3, 3, 3)
    plan = _plan(fn, g, x, w)
    live = live_bytes(plan)
    conv = _step(plan, "convolution_backward")
    inputs, grad_input, grad_weight = (72 + 192 + 54) * F32, 192 * F32, 54 * F32
    assert live[conv] == inputs + grad_input + grad_weight
    assert live[_step(plan, "getitem_1")] == grad_input + grad_weight + F32  # the tuple still holds both
    assert live[-1] == grad_weight + grad_weight + F32  # the doubled copy beside its input, and the sum
    roots = {s.root.name: s for s in plan_storages(plan)}
    assert roots["getitem"].dies == _step(plan, "getitem_1")
    assert roots[plan.output.args[0][1].name].dies == len(plan.steps)  # returned: outlives the call


def test_a_view_keeps_its_base_alive():
    """``a``'s name dies at its slice, but the slice is read three steps later: the whole 8 x 8
    storage lives until then."""

    def fn(x, w):
        a = x @ w
        view = a[:, :4]
        b = x.cos() @ w
        return (b @ view).exp()

    x, w = torch.randn(8, 8), torch.randn(8, 8)
    plan = _plan(fn, x, w)
    storage = {s.root.name: s for s in plan_storages(plan)}["mm"]
    assert storage.nbytes == 64 * F32 and storage.dies == _step(plan, "mm_2")
    live = live_bytes(plan)
    assert live[_step(plan, "mm_2")] == (64 + 64 + 32) * F32  # a, b and their product
    assert live[-1] == (32 + 32) * F32
