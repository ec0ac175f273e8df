"""Channels-last on CUDA (issue 13, item 2): the ``"auto"`` layout, cuDNN's NHWC convolutions and
the generated NHWC kernels, at sizes the CPU interpreter cannot afford; and the assumption the
layout pass rests on: ATen's CUDA kernels give the strides the fake tensors predict."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from ait_dynamo import metrics
from test_layout import BLOCKS, ResidualBlock, _channels, _with_statistics
from utils import check_compiled

pytestmark = pytest.mark.gpu
aten = torch.ops.aten
CL = torch.channels_last


def _significant(t: torch.Tensor) -> list[int]:
    return [st for size, st in zip(t.shape, t.stride()) if size != 1]


def _fake_and_real(op, *args):
    mode = FakeTensorMode()
    real = op(*args)
    with mode:
        fake = op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    return real, fake


def _pairs(real, fake):
    return list(zip(real, fake)) if isinstance(real, (tuple, list)) else [(real, fake)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("cin, cout, groups, stride, kernel", [
    (64, 64, 1, 1, 3), (32, 32, 32, 1, 3), (96, 96, 96, 2, 7), (48, 72, 3, 2, 3), (3, 64, 1, 2, 7), (256, 64, 1, 1, 1),
], ids=str)
def test_cudnn_strides_match_the_fake_tensors(cin, cout, groups, stride, kernel, dtype):
    """Generated kernels index extern results by their meta strides: convolution forward and
    backward on NHWC activations must return what the meta functions say, depthwise included."""
    x = torch.randn(8, cin, 28, 28, device="cuda", dtype=dtype).to(memory_format=CL)
    w = torch.randn(cout, cin // groups, kernel, kernel, device="cuda", dtype=dtype)
    args = (x, w, None, [stride] * 2, [kernel // 2] * 2, [1, 1], False, [0, 0], groups)
    real, fake = _fake_and_real(aten.convolution.default, *args)
    assert _significant(real) == _significant(fake), (real.stride(), fake.stride())
    grad = torch.randn_like(real).to(memory_format=CL)
    real_b, fake_b = _fake_and_real(aten.convolution_backward.default, grad, x, w, [cout], [stride] * 2,
                                    [kernel // 2] * 2, [1, 1], False, [0, 0], groups, [True, True, False])
    for r, f in _pairs(real_b, fake_b):
        if r is not None:
            assert _significant(r) == _significant(f), (r.stride(), f.stride())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_pooling_and_batch_norm_strides_match_the_fake_tensors(dtype):
    x = torch.randn(8, 48, 28, 28, device="cuda", dtype=dtype).to(memory_format=CL)
    weight, bias = torch.ones(48, device="cuda", dtype=dtype), torch.zeros(48, device="cuda", dtype=dtype)
    mean, var = torch.zeros(48, device="cuda", dtype=dtype), torch.ones(48, device="cuda", dtype=dtype)
    cases = [
        (aten.max_pool2d_with_indices.default, (x, [3, 3], [2, 2], [1, 1])),
        (aten._adaptive_avg_pool2d.default, (x, [1, 1])),
        (aten.avg_pool2d.default, (x, [2, 2], [2, 2])),
        (aten._native_batch_norm_legit_functional.default, (x, weight, bias, mean, var, True, 0.1, 1e-5)),
    ]
    for op, args in cases:
        real, fake = _fake_and_real(op, *args)
        for r, f in _pairs(real, fake):
            assert _significant(r) == _significant(f), (op, r.stride(), f.stride())
    _, saved_mean, saved_rstd, _, _ = aten._native_batch_norm_legit_functional.default(
        x, weight, bias, mean, var, True, 0.1, 1e-5)
    grad = torch.randn_like(x)  # NHWC like the input: the pass gives mixed-layout ATen calls one layout
    real, fake = _fake_and_real(aten.native_batch_norm_backward.default, grad, x, weight,
                                mean, var, saved_mean, saved_rstd, True, 1e-5, [True, True, True])
    for r, f in _pairs(real, fake):
        assert _significant(r) == _significant(f), (r.stride(), f.stride())


def _check_channels_last(kinds: tuple[str, ...], why: str = "conv-dominated") -> None:
    for record in metrics.compiled_graphs:
        if record.kind not in kinds:
            continue
        assert record.fallback_reason is None, record.fallback_reason
        assert record.layout.startswith(f"channels-last: {why}"), record.layout
        convolutions, channels_last = record.convolutions
        assert convolutions and channels_last == convolutions, record.convolutions


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_run_channels_last_on_cuda_by_default(name):
    torch.manual_seed(0)
    model = _with_statistics(BLOCKS[name]()).cuda().half().eval()
    x = torch.randn(16, _channels(model), 28, 28, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        check_compiled(model, x, backward=False, check_strides=True)
    _check_channels_last(("inference",))
    assert all(len(r.layout_copies) == 2 for r in metrics.compiled_graphs), [r.layout_copies for r in metrics.compiled_graphs]


# Training blocks: cuDNN's NHWC algorithms sum the weight and input gradients (over N·H·W and
# C·kh·kw) and batch norm's backward its statistics in another order than the NCHW ones eager
# runs. On the H200 at 2df0f8d the elementwise rule flagged 1-23 of 16,000 bf16 input-gradient
# elements (compiled 0.0625, eager 0.03125, fp64 0.0300), and float32 ones at 2e-6 to 2e-2 relative
# on sums that cancel, TF32 off: rounding order, judged by error distribution (tests/utils.py).
TRAINING_RULE = "distribution"


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_train_channels_last_on_cuda(name):
    torch.manual_seed(0)
    model = BLOCKS[name]().cuda().bfloat16().train()
    x = torch.randn(8, _channels(model), 20, 20, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    check_compiled(model, x, check_strides=True, rule=TRAINING_RULE)
    _check_channels_last(("forward", "backward"))


class _AotEagerIn(nn.Module):
    """The training graph AOTAutograd gives every backend, run op by op through ATen
    (``aot_eager``) on a copy of ``model`` in ``memory_format``: the float32 reference below."""

    def __init__(self, model: nn.Module, memory_format: torch.memory_format):
        super().__init__()
        self.memory_format = memory_format
        self.inner = copy.deepcopy(model).to(memory_format=memory_format)
        self.run = torch.compile(self.inner, backend="aot_eager", dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x.to(memory_format=self.memory_format))


@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_train_channels_last_in_float32_without_tf32(name):
    """float32 stays NCHW under "auto" (cuDNN's NHWC kernels would take TF32); forced on with
    TF32 off, the layout must change nothing but the speed.

    Judged against ``aot_eager`` in the same layout, not against eager: eager trains batch norm
    with cuDNN's kernels, while the functional graph AOTAutograd hands to a backend runs ATen's
    native batch norm, whose sums round otherwise. On the H200 (benchmarks/results/nvidia-h200/
    diagnose_1202/) a ResNet block's last batch-norm weight gradient came out at 2.9x eager's
    RMSE against float64 through aot_eager, Inductor 1.9x, and ait bit-identical to aot_eager in
    both layouts, on every gradient: the distance is the graph's, none of it ait's."""
    # flags(), not an assignment: torch.testing._internal (imported by the OpInfo tests in the
    # same process) freezes cuDNN's global flags
    with torch.backends.cudnn.flags(enabled=True, benchmark=torch.backends.cudnn.benchmark,
                                    deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
        torch.manual_seed(0)
        model = BLOCKS[name]().cuda().train()
        x = torch.randn(8, _channels(model), 20, 20, device="cuda", requires_grad=True)
        # static shapes: the reference compiles the same forward code with NHWC strides first,
        # and dynamo's automatic dynamic shapes would then give ait a symbolic graph (H200: the
        # squeeze-excitation block came out "contiguous: symbolic shapes")
        # ATen's batch-norm reductions on both sides, so that the layout is the only difference:
        # our channels-last reductions (kernels/batch_norm_channels.py) round their sums
        # otherwise, and are judged against float64 and eager in tests/test_batch_norm_channels.py.
        # (With them, on the H200 at 6aeab85, the ResNet block's bn1 bias gradient of its second
        # block came out with a largest error of 1.7e-4 against aot_eager's 8.0e-5 over 5 values,
        # its RMSE within twice aot_eager's; on the CPU interpreter, over 4 seeds, their errors
        # were 0.1-1.7x aot_eager's: benchmarks/results/nvidia-h200/bn_channels/README.md.)
        aten_reductions = {"batch_norm_reductions": "aten"}
        check_compiled(model, x, options={"channels_last": "on", **aten_reductions}, rule=TRAINING_RULE,
                       eager=_AotEagerIn(model, CL), dynamic=False)
        _check_channels_last(("forward", "backward"), why="channels_last='on'")
        metrics.reset()
        check_compiled(model, x, options=aten_reductions, rule=TRAINING_RULE,
                       eager=_AotEagerIn(model, torch.contiguous_format), dynamic=False)
        layouts = [r.layout for r in metrics.compiled_graphs]
        assert all(layout.startswith("contiguous") for layout in layouts), layouts


def test_off_keeps_nchw_on_cuda():
    model = _with_statistics(ResidualBlock(16)).cuda().eval()
    with torch.no_grad():
        check_compiled(model, torch.randn(4, 16, 14, 14, device="cuda"), backward=False, options={"channels_last": "off"})
    (record,) = metrics.compiled_graphs
    assert record.layout.startswith("contiguous") and record.convolutions == (2, 0)


@pytest.mark.parametrize("builder", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_run_channels_last(builder):
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = _with_statistics(getattr(models, builder)(num_classes=10)).cuda().half().eval()
    x = torch.randn(8, 3, 64, 64, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        check_compiled(model, x, backward=False, check_strides=True)
    _check_channels_last(("inference",))
    # the image made NHWC; nothing else changes memory order (the logits are 2-d)
    assert all(len(r.layout_copies) == 1 for r in metrics.compiled_graphs), [r.layout_copies for r in metrics.compiled_graphs]


def test_a_transformer_with_a_patch_embedding_stays_nchw():
    """One convolution among hundreds of nodes: not conv-dominated."""
    class PatchTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, 64, 8, stride=8)
            self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(80))

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            for layer in self.layers:
                tokens = tokens + torch.tanh(layer(tokens))
            return tokens

    model = PatchTransformer().cuda().eval()
    with torch.no_grad():
        check_compiled(model, torch.randn(2, 3, 64, 64, device="cuda"), backward=False)
    assert all(r.layout.startswith("contiguous") for r in metrics.compiled_graphs), [r.layout for r in metrics.compiled_graphs]
