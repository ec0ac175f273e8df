"""torch.compile(backend="ait") end to end: every case the compile path must get right."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from utils import check_compiled

import ait_dynamo
from ait_dynamo import metrics

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def test_several_outputs():
    def fn(x, y):
        return x + y, (x * y).sum(dim=1), torch.tanh(x) - y

    check_compiled(fn, torch.randn(7, 5, requires_grad=True), torch.randn(7, 5, requires_grad=True))
    assert metrics.graphs_compiled == 2 and metrics.fallbacks == 0
    kinds = [g.kind for g in metrics.compiled_graphs]
    assert kinds == ["forward", "backward"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_floating_dtypes_forward_backward(dtype):
    def fn(x, w):
        return F.gelu(x @ w).softmax(-1) * 3

    x = torch.randn(9, 13, dtype=dtype, requires_grad=True)
    w = torch.randn(13, 6, dtype=dtype, requires_grad=True)
    check_compiled(fn, x, w)


def test_integer_and_bool():
    def fn(i, b, x):
        return i * 3 + i.sum(), b & (i > 2), torch.where(b, x, -x), i // 2, (i % 3).to(torch.int8)

    i = torch.randint(-5, 10, (4, 6), dtype=torch.int64)
    b = torch.rand(4, 6) > 0.5
    check_compiled(fn, i, b, torch.randn(4, 6))
    assert metrics.compiled_graphs[-1].kind == "inference"


def test_mutated_inputs():
    def fn(x, y):
        x.add_(1)
        y.mul_(2)
        return x * y

    check_compiled(fn, torch.randn(5, 3), torch.randn(5, 3), backward=False)
    # the mutation runs inside the compiled graph (keep_inference_input_mutations)
    assert "aten.copy_.default" in metrics.compiled_graphs[-1].externs


def test_mutated_buffer_in_training():
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU())
    model.train()
    twin = copy.deepcopy(model)
    compiled_model = torch.compile(twin, backend="ait")
    x = torch.randn(10, 6)
    torch.testing.assert_close(compiled_model(x), model(x))
    torch.testing.assert_close(twin[1].running_mean, model[1].running_mean)
    torch.testing.assert_close(twin[1].running_var, model[1].running_var)
    assert int(twin[1].num_batches_tracked) == 1


def test_outputs_that_alias_inputs():
    def fn(x):
        return x.t(), x[1:], x.view(-1), x * 2

    x = torch.randn(4, 6, requires_grad=True)
    out = check_compiled(fn, x)
    compiled = torch.compile(fn, backend="ait")
    y = torch.randn(4, 6)
    t, tail, flat, _ = compiled(y)
    # views of the input stay views: writing through the input shows in them
    y[1, 2] = 100.0
    assert t[2, 1] == 100.0 and tail[0, 2] == 100.0 and flat[8] == 100.0
    assert out[0].shape == (6, 4)


def test_dropout_in_training_matches_eager_under_the_same_seed():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Dropout(0.3), torch.nn.Linear(32, 4))
    model.train()
    check_compiled(model, torch.randn(12, 16, requires_grad=True), seed=123)


def test_dropout_statistics():
    compiled = torch.compile(lambda x: F.dropout(x, 0.25, training=True), backend="ait")
    out = compiled(torch.ones(200, 200))
    kept = (out != 0).float().mean().item()
    assert 0.72 < kept < 0.78
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / 0.75))


def test_dynamic_shapes_one_compile_for_many_batch_sizes():
    def fn(x, w):
        return torch.relu(x @ w) + x.shape[0]

    w = torch.randn(8, 8, requires_grad=True)
    compiled = torch.compile(fn, backend="ait", dynamic=True)
    for batch in (3, 5, 17, 64):
        x = torch.randn(batch, 8, requires_grad=True)
        out = compiled(x, w)
        torch.testing.assert_close(out, fn(x, w))
        out.sum().backward()
    forward_graphs = [g for g in metrics.compiled_graphs if g.kind == "forward"]
    assert len(forward_graphs) == 1, [g.name for g in metrics.compiled_graphs]
    assert metrics.fallbacks == 0


def test_mark_dynamic():
    def fn(x):
        return (x.sin() * x.size(0)).sum(dim=0)

    compiled = torch.compile(fn, backend="ait")
    x = torch.randn(6, 3)
    torch._dynamo.mark_dynamic(x, 0)
    torch.testing.assert_close(compiled(x), fn(x))
    for batch in (2, 9, 31):
        y = torch.randn(batch, 3)
        torch.testing.assert_close(compiled(y), fn(y))
    assert metrics.graphs_compiled == 1 and metrics.fallbacks == 0


def test_scalar_and_non_tensor_outputs():
    def fn(x):
        return x.shape[0] * 2, x.sum(), (x + 1, "tag", None), x.dim()

    out = check_compiled(fn, torch.randn(3, 4))
    assert out[0] == 6 and out[2][1] == "tag" and out[3] == 2


def test_empty_graph():
    def fn(x):
        return x

    x = torch.randn(3)
    assert torch.compile(fn, backend="ait")(x) is x

    def constant(x):
        return x, torch.zeros(2)

    out = check_compiled(constant, torch.randn(3))
    assert torch.equal(out[1], torch.zeros(2))


def test_zero_size_and_size_one_and_broadcast_and_non_contiguous():
    def fn(x, y):
        return (x * y).exp(), y.sum()

    check_compiled(fn, torch.randn(0, 5), torch.randn(1, 5))
    check_compiled(fn, torch.randn(1, 1), torch.randn(1))
    check_compiled(fn, torch.randn(6, 1, 4, requires_grad=True), torch.randn(5, 1, requires_grad=True))
    base = torch.randn(8, 6)
    check_compiled(fn, base.t(), torch.randn(6, 8)[:, ::1])
    check_compiled(fn, torch.randn(10, 10)[::2, 1::3], torch.randn(5, 3))


def test_module_with_parameters_eval_and_train():
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.GELU(), torch.nn.LayerNorm(20))
    check_compiled(model.eval(), torch.randn(4, 10), backward=False)
    check_compiled(model.train(), torch.randn(4, 10, requires_grad=True))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_tensors(dtype):
    def fn(x, y):
        return torch.nn.functional.layer_norm(x + y, (x.shape[-1],)).relu(), (x * y).sum()

    check_compiled(
        fn,
        torch.randn(33, 65, device="cuda", dtype=dtype, requires_grad=True),
        torch.randn(65, device="cuda", dtype=dtype, requires_grad=True),
    )


def test_public_names():
    for name in ("AitConfig", "ait_compile", "memory_efficient_fusion", "metrics", "min_cut_rematerialization_partition"):
        assert hasattr(ait_dynamo, name)


def test_meta_tensors_run_through_aten():
    """Shape inference on the meta device: kernels cannot run there, so every step takes its
    ATen path (it used to fail looking up whether Triton runs on 'meta')."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.LayerNorm(16)).to("meta")
    compiled = torch.compile(model, backend="ait")
    out = compiled(torch.empty(4, 8, device="meta", requires_grad=True))
    out.sum().backward()
    assert out.shape == (4, 16) and out.device.type == "meta"
    assert model[0].weight.grad.shape == (16, 8)
