"""The seed documents' models and the AOT Autograd tutorial, compiled with ait."""

from __future__ import annotations

import pytest
import torch
from functorch.compile import aot_function, min_cut_rematerialization_partition
from utils import check_compiled, needs_cpu_triton

from ait_dynamo import ait_compile, memory_efficient_fusion, metrics
from benchmarks.models import EncoderBlock, LoweringModel, SimpleMLP, tutorial_fn


@pytest.mark.parametrize("train", [False, True])
def test_simple_mlp(train):
    model = SimpleMLP(32).train(train)
    check_compiled(model, torch.randn(16, 32, requires_grad=train), backward=train)
    assert metrics.fallbacks == 0


@pytest.mark.parametrize("train", [False, True])
def test_encoder_block(train):
    model = EncoderBlock(32, 4, 64).train(train)
    check_compiled(model, torch.randn(3, 7, 32, requires_grad=train), backward=train)
    assert metrics.fallbacks == 0


def test_encoder_block_with_dropout_in_training():
    model = EncoderBlock(32, 4, 64, dropout=0.1).train()
    check_compiled(model, torch.randn(2, 5, 32, requires_grad=True), seed=7)


@pytest.mark.parametrize("train", [False, True])
def test_lowering_model_with_attention_kept_in_eager(train):
    model = LoweringModel(32, 4, 64).train(train)
    options = {"fallback_ops": ["aten.bmm", "aten.baddbmm", "aten._softmax"]}
    check_compiled(model, torch.randn(2, 9, 32, requires_grad=train), backward=train, options=options)
    assert metrics.fallbacks == 0


def _tutorial_inputs(shape=(2, 4)):
    return [torch.randn(*shape, requires_grad=True) for _ in range(4)]


def _check_tutorial(compiled_fn, inputs):
    """The tutorial's own assertions: same result and the same four gradients."""
    ref = tutorial_fn(*inputs)
    ref.sum().backward()
    cloned = [x.clone().detach().requires_grad_(True) for x in inputs]
    res = compiled_fn(*cloned)
    res.sum().backward()
    assert torch.allclose(ref, res)
    for original, clone in zip(inputs, cloned):
        assert torch.allclose(original.grad, clone.grad)


def test_tutorial_with_ait_compile_as_fw_and_bw_compiler():
    inputs = _tutorial_inputs()
    _check_tutorial(aot_function(tutorial_fn, fw_compiler=ait_compile, bw_compiler=ait_compile), inputs)
    assert metrics.graphs_compiled == 2 and metrics.fallbacks == 0


def test_tutorial_with_min_cut_partition_and_ait():
    inputs = _tutorial_inputs()
    compiled = aot_function(
        tutorial_fn, fw_compiler=ait_compile, bw_compiler=ait_compile, partition_fn=min_cut_rematerialization_partition
    )
    _check_tutorial(compiled, inputs)


@needs_cpu_triton  # generated kernels and the min-cut partition: CPU tensors under the interpreter
def test_tutorial_memory_efficient_fusion():
    _check_tutorial(memory_efficient_fusion(tutorial_fn), _tutorial_inputs())
    forward, backward = metrics.compiled_graphs
    assert (forward.kind, backward.kind) == ("forward", "backward")
    # the min-cut partition recomputes the cos in backward instead of saving it
    assert "aten.cos.default" in backward.externs + backward.fused_ops
    # and each graph is one generated kernel (the seed tutorial's target)
    assert (len(forward.kernels), len(backward.kernels)) == (1, 1)
    assert not forward.externs and not backward.externs


def test_memory_efficient_fusion_on_a_module():
    model = SimpleMLP(16)
    compiled = memory_efficient_fusion(model)
    x = torch.randn(4, 16, requires_grad=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x))
    out.sum().backward()
    grad = model.dense1.weight.grad.clone()
    model.zero_grad()
    model(x).sum().backward()
    torch.testing.assert_close(grad, model.dense1.weight.grad)


def test_memory_efficient_fusion_rejects_unknown_option():
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        memory_efficient_fusion(tutorial_fn, bogus=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_encoder_block_low_precision_eval(dtype):
    model = EncoderBlock(32, 4, 64).eval().to(dtype)
    check_compiled(model, torch.randn(2, 6, 32, dtype=dtype), backward=False)
