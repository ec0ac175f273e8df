"""Training batch norm on CUDA as ATen's statistics kernel plus a normalisation the planner fuses
(passes/batch_norm_split.py): the running statistics written in place, the normalisation in the
kernel of the ReLU or add that reads it, and the results those of eager."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode

import ait_dynamo.passes.batch_norm_split as batch_norm_split
from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from utils import train_side_by_side

aten = torch.ops.aten
FUNCTIONAL = aten._native_batch_norm_legit_functional.default
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (ATen's batch_norm_stats)")


def _graph(device: str, extra_reader: bool = False, normalised_read: bool = True) -> fx.GraphModule:
    """The forward graph AOTAutograd hands over for BN + ReLU in training, on fake tensors of
    ``device`` (a CUDA graph can be built on a machine without one)."""
    with FakeTensorMode():
        x = torch.empty(4, 8, 6, 6, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w, b, rm, rv = (torch.empty(8, device=device) for _ in range(4))
        outs = FUNCTIONAL(x, w, b, rm, rv, True, 0.1, 1e-5)
        relu = aten.relu.default(outs[0])
    graph = fx.Graph()
    inputs = {}
    for name, value in dict(x=x, w=w, b=b, rm=rm, rv=rv).items():
        inputs[name] = graph.placeholder(name)
        inputs[name].meta["val"] = value
    bn = graph.call_function(FUNCTIONAL, (inputs["x"], inputs["w"], inputs["b"], inputs["rm"], inputs["rv"], True, 0.1, 1e-5))
    bn.meta["val"] = outs
    items = []
    for i in range(5):
        items.append(graph.call_function(operator.getitem, (bn, i)))
        items[-1].meta["val"] = outs[i]
    result = graph.call_function(aten.relu.default, (items[0],))
    result.meta["val"] = relu
    for buffer, new in ((inputs["rm"], items[3]), (inputs["rv"], items[4])):
        graph.call_function(aten.copy_.default, (buffer, new)).meta["val"] = buffer.meta["val"]
    returned = [result, items[1], items[2]] if normalised_read else [items[1], items[2]]
    if not normalised_read:
        graph.erase_node(result)
    if extra_reader:
        returned.append(inputs["rm"])
    graph.output(tuple(returned))
    return fx.GraphModule(nn.Module(), graph)


def _targets(gm: fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


ATEN_REDUCTIONS = AitConfig.create({"batch_norm_reductions": "aten"})  # ATen's statistics kernel


def test_a_cuda_batch_norm_becomes_statistics_and_a_fused_normalisation(monkeypatch):
    monkeypatch.setattr(batch_norm_split, "count_tensor", lambda count, device: torch.full((1,), float(count)))
    gm = batch_norm_split.split_training_batch_norm(_graph("cuda"), ATEN_REDUCTIONS)
    targets = _targets(gm)
    assert FUNCTIONAL not in targets and aten.copy_.default not in targets, targets
    assert targets.count(aten.batch_norm_stats.default) == 1
    assert targets.count(aten.batch_norm_gather_stats_with_counts.default) == 1
    assert gm._batch_norm_count0.item() == 4 * 6 * 6
    relu = next(n for n in gm.graph.nodes if n.target is aten.relu.default)
    normalised = relu.args[0]
    assert normalised.target is aten._to_copy.default and normalised.kwargs["dtype"] is torch.bfloat16
    assert normalised.meta["val"].stride() == (288, 1, 48, 8)  # the activation's channels-last strides
    output = next(n for n in gm.graph.nodes if n.op == "output")
    assert [n.target for n in output.args[0][1:]] == [operator.getitem, operator.getitem]  # the saved mean, invstd
    assert output.args[0][1].args[0].target is aten.batch_norm_stats.default


def test_statistics_alone_build_no_normalisation(monkeypatch):
    monkeypatch.setattr(batch_norm_split, "count_tensor", lambda count, device: torch.full((1,), float(count)))
    gm = batch_norm_split.split_training_batch_norm(_graph("cuda", normalised_read=False), ATEN_REDUCTIONS)
    targets = _targets(gm)
    assert FUNCTIONAL not in targets and aten.batch_norm_stats.default in targets, targets
    assert aten.sub.Tensor not in targets and aten._to_copy.default not in targets, targets


def test_the_count_is_a_real_tensor_under_the_fake_mode_passes_run_in():
    """Passes run inside AOTAutograd's fake mode: a constant made there must still be real (on
    the H200 it was fake, and the first call failed with "Mixing fake modes")."""
    from torch._subclasses.fake_tensor import FakeTensor

    with FakeTensorMode():
        count = batch_norm_split.count_tensor(12, torch.device("cpu"))
    assert not isinstance(count, FakeTensor) and count.item() == 12


def test_cpu_graphs_and_buffers_read_elsewhere_keep_the_op():
    config = ATEN_REDUCTIONS
    assert FUNCTIONAL in _targets(batch_norm_split.split_training_batch_norm(_graph("cpu"), config))
    assert FUNCTIONAL in _targets(batch_norm_split.split_training_batch_norm(_graph("cuda", extra_reader=True), config))
    fused = AitConfig.create().replace(fused_batch_norm_training=True)
    assert FUNCTIONAL in _targets(batch_norm_split.split_training_batch_norm(_graph("cuda"), fused))


class Bottleneck(nn.Module):
    """conv-BN-ReLU, conv-BN, + a downsampled residual through its own BN, ReLU: ResNet's block."""

    def __init__(self, channels: int = 8, affine: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, affine=affine)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * channels)
        self.down = nn.Conv2d(channels, 2 * channels, 1, bias=False)
        self.bn_down = nn.BatchNorm2d(2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.bn_down(self.down(x)))


@needs_cuda
@pytest.mark.parametrize("reductions", ["triton", "aten"])
@pytest.mark.parametrize("precision", ["float32", "autocast-bfloat16"])
@pytest.mark.parametrize("affine", [True, False])
def test_training_steps_match_eager(precision, affine, reductions):
    torch.manual_seed(0)
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=False):
        autocast = precision != "float32"
        tolerance = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-4, atol=1e-5)
        # the running variance comes from the inverse deviation: a few float32 ulps from eager's
        buffers = dict(rtol=1e-5 if not autocast else 1e-2, atol=1e-6 if not autocast else 1e-3)
        train_side_by_side(Bottleneck(affine=affine).cuda(), lambda: torch.randn(4, 8, 9, 7, device="cuda"),
                           autocast=torch.bfloat16 if autocast else None, tolerance=tolerance, buffer_tolerance=buffers,
                           channels_last="on", batch_norm_reductions=reductions)
    forward = [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]
    backward = [g for g in metrics.compiled_graphs if g.kind == "backward"][-1]
    assert str(FUNCTIONAL) not in forward.externs, forward.externs
    if reductions == "aten":
        assert forward.externs.count("aten.batch_norm_stats.default") == 3, forward.externs
        assert backward.externs.count("aten.native_batch_norm_backward.default") == 3, backward.externs
    else:  # kernels/batch_norm_channels.py, forward and backward
        assert forward.externs.count("ait_dynamo.kernels.batch_norm_channels.channel_statistics") == 3, forward.externs
        assert "aten.native_batch_norm_backward.default" not in backward.externs, backward.externs
        assert backward.externs.count("ait_dynamo.kernels.batch_norm_channels.channel_gradient_sums") == 3
    # the normalisations run inside generated kernels, with their ReLU and the residual add
    assert "aten.relu.default" in forward.fused_ops and "aten.sub.Tensor" in forward.fused_ops
