"""Channels-last convolutional graphs (issue 13, items 2 and 5; ``passes/layout.py``).

The CPU tests force the layout with ``channels_last="on"`` (``"auto"`` keeps it to CUDA) and run
the generated kernels through Triton's interpreter. Each block is checked three ways: values
against eager and the fp64 reference (forward, and backward in training), eager's strides on
every output and gradient, and structure: every convolution reads channels-last activations,
and the only copies that change a value's memory order are at the graph's edges (the input
made channels-last, outputs given back eager's strides, weight gradients), never between one
convolution block and the next.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.passes import layout
from utils import check_compiled, needs_cpu_triton, train_side_by_side

ON = {"channels_last": "on"}


class ResidualBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU, conv-BN, + input, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


class SqueezeExcitation(nn.Module):
    """conv-BN-ReLU, then channel weights from the global average (EfficientNet, MobileNetV3)."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(F.adaptive_avg_pool2d(y, 1)))))
        return y * scale


class ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock: depthwise 7x7, LayerNorm over channels in NHWC, MLP, layer scale."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.fc1 = nn.Linear(channels, 4 * channels)
        self.fc2 = nn.Linear(4 * channels, channels)
        self.scale = nn.Parameter(torch.rand(channels, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.scale * y


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, depthwise 3x3, 1x1 project (BN after each), + input."""

    def __init__(self, channels: int, expansion: int = 3):
        super().__init__()
        hidden = channels * expansion
        self.layers = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


def _two(block: type, *args: int) -> nn.Module:
    """Two blocks in a row: what lies between them must not be a transpose."""
    return nn.Sequential(block(*args), block(*args))


BLOCKS = {
    "resnet": lambda: _two(ResidualBlock, 5),
    "squeeze_excitation": lambda: _two(SqueezeExcitation, 7, 3),
    "convnext": lambda: _two(ConvNeXtBlock, 5),
    "inverted_residual": lambda: _two(InvertedResidual, 5),
}


def _with_statistics(model: nn.Module) -> nn.Module:
    """Running statistics away from (0, 1), so that inference batch norm computes something."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def _check_structure(kind: str, copies: int, weight_copies: int = 0) -> None:
    records = [g for g in metrics.compiled_graphs if g.kind == kind]
    assert records, [g.kind for g in metrics.compiled_graphs]
    for record in records:
        assert record.fallback_reason is None, record.fallback_reason
        assert record.layout.startswith("channels-last"), record.layout
        convolutions, channels_last = record.convolutions
        assert convolutions > 0 and channels_last == convolutions, record.convolutions
        assert len(record.layout_copies) == copies, record.layout_copies
        assert len(record.weight_copies) == weight_copies, record.weight_copies


# Copies that change memory order, per graph. Inference and forward: the input made
# channels-last, the output given back eager's strides. Backward: the output gradient and the
# saved input made channels-last, the input gradient back to NCHW, and the weight gradients of the
# 3x3 convolutions back to OIHW (1x1 and depthwise weights are both layouts at once).
_EDGE_COPIES = 2
_WEIGHT_GRADIENTS = {"resnet": 4, "squeeze_excitation": 2, "convnext": 0, "inverted_residual": 0}
# Inference: the weights of the 3x3 convolutions, graph inputs there, copied NHWC by a kernel of
# ours (ATen's convolution would copy them inside each call). A training forward saves its
# weights for the backward and copies none.
_WEIGHT_COPIES = {"resnet": 4, "squeeze_excitation": 2, "convnext": 0, "inverted_residual": 0}


@needs_cpu_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", list(BLOCKS))
def test_inference_block_runs_channels_last(name, dtype):
    torch.manual_seed(0)
    model = _with_statistics(BLOCKS[name]()).to(dtype).eval()
    x = torch.randn(2, _channels(model), 6, 5, dtype=dtype)
    with torch.no_grad():
        check_compiled(model, x, backward=False, options=ON, check_strides=True)
    _check_structure("inference", _EDGE_COPIES, _WEIGHT_COPIES[name])


@needs_cpu_triton
@pytest.mark.parametrize("name", list(BLOCKS))
def test_training_block_runs_channels_last_forward_and_backward(name):
    torch.manual_seed(0)
    model = BLOCKS[name]().train()
    x = torch.randn(2, _channels(model), 5, 6, requires_grad=True)
    check_compiled(model, x, options=ON, check_strides=True)
    _check_structure("forward", _EDGE_COPIES)
    _check_structure("backward", _EDGE_COPIES + 1 + _WEIGHT_GRADIENTS[name])


def _channels(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def _compiled_inference(model: nn.Module, x: torch.Tensor, tmp_path) -> tuple:
    """(the graph's metrics record, its plan.txt, its module.py) of ``model`` compiled channels-last
    for inference and checked against eager."""
    model = _with_statistics(model).eval()
    with torch.no_grad():
        check_compiled(model, x, backward=False, options={**ON, "debug_dir": str(tmp_path)}, check_strides=True)
    (record,) = metrics.compiled_graphs
    folder = tmp_path / record.name
    return record, (folder / "plan.txt").read_text(), (folder / "module.py").read_text()


@needs_cpu_triton
def test_batch_norm_relu_and_residual_add_fuse_into_one_channels_last_kernel(tmp_path):
    """Inference: after each convolution one kernel (BN + ReLU, or BN + add + ReLU), which walks
    the NHWC buffers in memory order (flat index, no per-dim div/mod)."""
    torch.manual_seed(0)
    record, plan, source = _compiled_inference(ResidualBlock(5), torch.randn(2, 5, 6, 5), tmp_path)
    assert record.externs == ["aten.convolution.default"] * 2, record.externs
    # over the activations' space: the input made channels-last, then one kernel per convolution
    # (the second also writes the output back in NCHW); the per-channel BN scales are 1-d kernels
    full = re.findall(r"pointwise (kernel_\d+): .* over \(2, 5, 6, 5\)", plan)
    assert len(full) == 3, plan
    epilogue = source[source.index(f"def {full[1]}("):]
    epilogue = epilogue[:epilogue.index("@triton.jit")]
    assert "tl.load(in_ptr0 + (xindex)" in epilogue and "tl.store(out_ptr0 + (xindex)" in epilogue, epilogue


@needs_cpu_triton
def test_inference_weights_are_copied_channels_last_by_one_kernel_per_shape(tmp_path):
    """The 3x3 weights, graph inputs in inference, reach cuDNN NHWC: the copies of one shape run
    in one kernel, placed before the first convolution of that shape; every convolution reads a
    copy (the 1x1 weight, both layouts at once, is read as it is)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1, bias=False), ResidualBlock(5), ResidualBlock(5),
                          nn.Conv2d(5, 4, 1, bias=False))
    record, plan, source = _compiled_inference(model, torch.randn(2, 3, 6, 5), tmp_path)
    assert len(record.weight_copies) == 5 and all("(27, 9, 3, 1) -> (27, 1, 9, 3)" in c or
                                                  "(45, 9, 3, 1) -> (45, 1, 15, 5)" in c
                                                  for c in record.weight_copies), record.weight_copies
    copying = {name: (outputs.count("clone"), int(channels))
               for name, outputs, channels in re.findall(r"pointwise (kernel_\d+): ([\w, ]+) = \[[\w, ]+\] over \(5, (\d), 3, 3\)", plan)}
    assert sorted(copying.values()) == [(1, 3), (4, 5)], plan
    calls = set(re.findall(r"= _aten_convolution_default\((\w+), (\w+), ", source))
    assert len(calls) == 6 and sum(w.startswith("clone") for _, w in calls) == 5, calls
    # each kernel right before the first convolution of its shape, not at the graph's start
    body = source[source.index("    def call(args):"):source.index("call._boxed_call")]
    convolutions = [m.start() for m in re.finditer(r"= _aten_convolution_default\(", body)]
    launches = {name: body.index(f"{name}_site.launch(") for name in copying}
    first, second = sorted(launches.values())
    assert first < convolutions[0] < second < convolutions[1], (launches, convolutions)


@needs_cpu_triton
def test_a_weight_read_by_more_than_convolutions_is_not_copied():
    """A weight something else reads too (here a scale from its mean) reaches the convolution as
    it is, as a training forward's does (it saves the weight for the backward: the training
    block test holds its forward to no weight copies)."""

    class ScaledByWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.conv.weight.mean()

    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(ScaledByWeight().eval(), torch.randn(2, 4, 5, 6), backward=False, options=ON, check_strides=True)
    (record,) = metrics.compiled_graphs
    assert record.convolutions == (1, 1) and record.weight_copies == [], record


@needs_cpu_triton
def test_convolution_bias_is_added_by_the_kernel_that_reads_the_convolution(tmp_path):
    """Squeeze-excitation's biased 1x1 convolutions run without their bias; the bias is added
    inside the next kernel (ReLU, sigmoid), so no kernel or ATen call is left doing only an add."""
    torch.manual_seed(0)
    record, plan, source = _compiled_inference(SqueezeExcitation(7, 3), torch.randn(2, 7, 6, 5), tmp_path)
    assert record.externs == ["aten.convolution.default"] * 3, record.externs
    calls = re.findall(r"= _aten_convolution_default\((\w+), (\w+), (\w+),", source)
    assert calls and all(bias == "None" for _, _, bias in calls), calls
    after_reduce = re.findall(r"pointwise kernel_\d+: .*\[(.*)\] over \(2, 3, 1, 1\)", plan)
    assert len(after_reduce) == 1 and "add" in after_reduce[0] and "relu" in after_reduce[0], plan


@needs_cpu_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_convolutions_keep_their_bias_on_the_cpu(dtype, tmp_path):
    """On the CPU eager adds a half-precision convolution's bias inside and rounds once: the split
    would round twice (random convnet seed 437), so there the bias stays in the convolution."""
    torch.manual_seed(0)
    model = SqueezeExcitation(7, 3).to(dtype)
    record, plan, source = _compiled_inference(model, torch.randn(2, 7, 6, 5, dtype=dtype), tmp_path)
    calls = re.findall(r"= _aten_convolution_default\((\w+), (\w+), (\w+),", source)
    # the first 3x3 convolution has no bias, the squeeze-excitation's two 1x1 ones keep theirs (a
    # set: the module writes each call twice, in its checking and its plain ``call``)
    assert sorted(bias != "None" for _, _, bias in set(calls)) == [False, True, True], calls


@needs_cpu_triton
def test_layout_is_contiguous_by_default_on_the_cpu():
    torch.manual_seed(0)
    model = _with_statistics(ResidualBlock(5)).eval()
    with torch.no_grad():
        check_compiled(model, torch.randn(2, 5, 6, 5), backward=False, check_strides=True)
    (record,) = metrics.compiled_graphs
    assert record.layout.startswith("contiguous: on cpu"), record.layout
    assert record.convolutions == (2, 0) and not record.layout_copies


@needs_cpu_triton
def test_channels_last_input_stays_channels_last_and_needs_no_copy():
    torch.manual_seed(0)
    model = _with_statistics(ResidualBlock(5)).eval()
    x = torch.randn(2, 5, 6, 5).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = check_compiled(model, x, backward=False, options=ON, check_strides=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert metrics.compiled_graphs[0].layout_copies == []


def _random_after_convolution(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    y = torch.relu(F.conv2d(x, w, padding=1))
    return F.dropout(y, 0.5, training=True) + y


@needs_cpu_triton
def test_random_ops_read_the_traced_strides_so_eager_seeds_match():
    """fallback_random=True promises eager's random numbers, which follow memory order: the
    dropout reads an NCHW copy of the NHWC convolution output."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 5, 6), torch.randn(4, 3, 3, 3)
    check_compiled(_random_after_convolution, x, w, backward=False, options=ON, check_strides=True)
    (record,) = metrics.compiled_graphs
    assert record.layout.startswith("channels-last") and record.convolutions == (1, 1), record


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("on", "on"), ("OFF", "off"), (True, "on"),
                                             (False, "off"), ("1", "on")])
def test_channels_last_option_values(value, expected):
    assert AitConfig.create({"channels_last": value}, environ={}).channels_last == expected
    assert AitConfig.create(environ={"AIT_CHANNELS_LAST": str(value)}).channels_last == expected


@pytest.mark.parametrize("value", ["nhwc", 2, None])
def test_a_bad_channels_last_value_names_the_valid_ones(value):
    with pytest.raises(ValueError, match=r"'channels_last'.*auto, on, off"):
        AitConfig.create({"channels_last": value}, environ={})


def _fake_cuda_graph(convolutions: int, extra_nodes: int, dtype: torch.dtype = torch.float16) -> torch.fx.GraphModule:
    """A traced graph on fake CUDA tensors (no GPU needed): ``convolutions`` 3x3 convolutions,
    then ``extra_nodes`` cheap pointwise ops."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    def fn(x, w):
        for _ in range(convolutions):
            x = F.conv2d(x, w, padding=1)
        for _ in range(extra_nodes):
            x = x * 1.5
        return x

    with FakeTensorMode(allow_non_fake_inputs=True):
        x, w = (torch.empty(2, 4, 6, 6, device="cuda", dtype=dtype),
                torch.empty(4, 4, 3, 3, device="cuda", dtype=dtype))
        return make_fx(fn, tracing_mode="fake")(x, w)


@pytest.mark.parametrize("convolutions, extra_nodes, expected", [
    (2, 10, True),     # a small convnet
    (1, 400, False),   # one patch-embedding convolution in a large graph: a transformer
    (2, 500, True),    # two in 500: one per 300 nodes is enough
    (0, 10, False),
])
def test_auto_layout_rule_on_cuda_graphs(convolutions, extra_nodes, expected):
    try:
        gm = _fake_cuda_graph(convolutions, extra_nodes)
    except (RuntimeError, AssertionError) as error:  # a CPU-only build that cannot fake CUDA tensors
        pytest.skip(f"no fake CUDA tensors here: {error}")
    decision = layout.decide(gm, AitConfig.create({"channels_last": "auto"}, environ={}))
    assert decision.channels_last is expected, decision.reason
    assert not layout.decide(gm, AitConfig.create({"channels_last": "off"}, environ={})).channels_last


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_auto_layout_keeps_float32_convolutions_nchw(dtype):
    """cuDNN's NHWC kernels would round float32 convolutions to TF32 (see passes/layout.py)."""
    try:
        gm = _fake_cuda_graph(2, 10, dtype)
    except (RuntimeError, AssertionError) as error:
        pytest.skip(f"no fake CUDA tensors here: {error}")
    decision = layout.decide(gm, AitConfig.create({"channels_last": "auto"}, environ={}))
    assert decision.channels_last is (dtype != torch.float32), decision.reason
    if dtype == torch.float32:
        assert "TF32" in decision.reason
        assert layout.decide(gm, AitConfig.create({"channels_last": "on"}, environ={})).channels_last


def _slot_blocks(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor]:
    a = torch.relu(F.conv2d(x, w, padding=1)) * 2  # an NHWC kernel output; dies at the next conv
    b = torch.sigmoid(F.conv2d(a, w, padding=1)) * 3  # NHWC as well: it may take a's buffer
    return (F.conv2d(b, w, padding=1) + 1,)  # back in NCHW for the caller: it must not take b's


def test_kernel_outputs_take_dead_channels_last_buffers_of_their_layout_only(tmp_path):
    from ait_dynamo.cache import load_module
    from ait_dynamo.kernels import runtime
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    x, w = torch.randn(2, 5, 6, 5), torch.randn(5, 5, 3, 3)
    gm = make_fx(_slot_blocks, tracing_mode="fake")(x, w)
    config = AitConfig.create({"cache_dir": str(tmp_path), **ON}, environ={})
    work = run_passes(gm, config)
    plan, _ = build_plan(work, config)
    by_name = {n.name: n for n in work.graph.nodes}
    generated = generate_wrapper(plan, work, "test", triton_runs_on=lambda device: True)
    body = generated.source[generated.source.index("    def call(args):"):]
    handed = re.findall(r"\n\s+(\w+) = (\w+)\n", body)
    assert handed, body
    for taker, dead in handed:
        # a hand-over only between buffers of one layout, here NHWC ones
        assert by_name[taker].meta["val"].stride() == by_name[dead].meta["val"].stride(), (taker, dead)
        assert layout.is_channels_last(by_name[taker].meta["val"]), taker
    if runtime.triton_runs_on("cpu"):
        module, _ = load_module(generated.source, str(tmp_path))
        (got,) = module.make_call(generated.constants)([x.clone(), w])
        (want,) = _slot_blocks(x, w)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert got.stride() == want.stride()


@needs_cpu_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_a_dying_channels_last_convolution_output_is_overwritten_in_place(tmp_path, dtype):
    """Inference: batch norm + residual add + ReLU reads the second convolution's NHWC output
    elementwise, at the offsets it writes, and that output dies there: the kernel writes into it
    instead of allocating a third activation buffer (the second block's too). Values and strides
    as eager's."""
    torch.manual_seed(0)
    model = _two(ResidualBlock, 5).to(dtype)
    record, plan, source = _compiled_inference(model, torch.randn(2, 5, 6, 5, dtype=dtype), tmp_path)
    body = source[source.index("    def call(args):"):source.index("call._boxed_call")]
    taken = dict(re.findall(r"\n\s+(\w+) = (convolution\w*)\n", body))
    assert len(taken) >= 2 and all(name.startswith("relu") for name in taken), body
    for taker in taken:  # the kernel that writes it reads the buffer it took, in the same call
        launch = body[body.index(f"{taker} = {taken[taker]}"):]
        launch = launch[:launch.index("\n", launch.index("_site.launch("))]
        assert taken[taker] in launch.split("_site.launch(")[1], launch


@needs_cpu_triton
def test_an_autocast_weight_cast_writes_the_weight_channels_last(tmp_path):
    """Under autocast the graph casts each float32 weight to bf16. With NHWC activations that cast
    writes the 3x3 weights channels-last (cuDNN would copy an OIHW weight to NHWC on every call,
    forward and backward), the forward saves them so for the backward, and no copy of a weight
    is counted among the layout copies; training still matches eager."""
    torch.manual_seed(0)
    metrics.reset()
    # one step: bf16 rounding differences grow with each SGD step (0.07 on outputs of ~3 by the
    # third, with or without this cast's layout)
    train_side_by_side(BLOCKS["resnet"](), lambda: torch.randn(2, 5, 6, 5), steps=1, autocast=torch.bfloat16,
                       tolerance=dict(rtol=3e-2, atol=3e-2), channels_last="on", debug_dir=str(tmp_path))
    forward = next(g for g in metrics.compiled_graphs if g.kind == "forward")
    graph = (tmp_path / forward.name / "10-channels_last_layout.txt").read_text()
    casts = re.findall(r'"bf16\[5, 5, 3, 3\]" = torch\.ops\.aten\._to_copy\.default\(primals_\d+, dtype = torch\.bfloat16(.*?)\)',
                       graph)
    assert len(casts) == 4 and all("memory_format = torch.channels_last" in c for c in casts), casts
    _check_structure("forward", _EDGE_COPIES)
