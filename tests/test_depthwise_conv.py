"""Depthwise convolutions as a template kernel with the epilogue fused (issue 13, item 4):
``kernels/depthwise.py``, ``kernels/codegen_conv.py``, ``passes/fusion_conv.py``. On the CPU under
Triton's interpreter, with ``gemm_backends=("triton",)`` (the template wherever Triton runs)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels.launch_site import LaunchSite
from utils import check_compiled, needs_cpu_triton

pytestmark = needs_cpu_triton

TRITON = {"gemm_backends": ("triton",)}
MUST_NOT_FAIL = pytest.mark.usefixtures("generated_kernels_must_not_fail")


def _graph(kind: str = "forward") -> metrics.GraphRecord:
    return [g for g in metrics.compiled_graphs if g.kind in ((kind, "inference") if kind == "forward" else (kind,))][-1]


class _DepthwiseBlock(nn.Module):
    """Depthwise convolution, batch norm, activation (MobileNet / EfficientNet), and optionally
    the block's input added back."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, dilation: int = 1, bias: bool = False,
                 activation: nn.Module | None = None, residual: bool = False):
        super().__init__()
        padding = dilation * (kernel // 2)
        self.conv = nn.Conv2d(channels, channels, kernel, stride, padding, dilation=dilation, groups=channels, bias=bias)
        self.bn = nn.BatchNorm2d(channels)
        self.act = activation or nn.ReLU()
        self.residual = residual
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        return y + x if self.residual else y


@MUST_NOT_FAIL
@pytest.mark.parametrize("shape, kernel, stride, dilation", [
    ((2, 12, 9, 7), 3, 1, 1),      # odd sizes, no multiple of any block
    ((1, 5, 6, 6), 5, 2, 1),       # batch 1, stride 2, 5x5
    ((3, 20, 11, 13), 7, 1, 1),    # ConvNeXt's 7x7
    ((2, 8, 10, 10), 3, 1, 2),     # dilation
    ((2, 3, 1, 4), 3, 1, 1),       # a 1-high image: every vertical tap but one is padding
], ids=["3x3", "5x5-stride2-batch1", "7x7", "dilated", "one-row"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_depthwise_block_inference(shape, kernel, stride, dilation, channels_last):
    torch.manual_seed(0)
    block = _DepthwiseBlock(shape[1], kernel, stride, dilation, activation=nn.Hardswish()).eval()
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        block = block.to(memory_format=torch.channels_last)
    with torch.no_grad():
        check_compiled(block, x, backward=False, options=TRITON, check_strides=True)
    graph = _graph()
    assert "aten.convolution.default" in graph.fused_ops and "aten.convolution.default" not in graph.externs
    assert "aten.hardswish.default" not in graph.externs
    assert graph.fallback_reason is None


@MUST_NOT_FAIL
@pytest.mark.parametrize("kernel", [3, 7], ids=["3x3-pixel-tiles", "7x7-row-tiles"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_with_bias_and_silu(dtype, kernel):
    torch.manual_seed(0)
    block = _DepthwiseBlock(16, kernel, bias=True, activation=nn.SiLU()).eval().to(dtype)
    x = torch.randn(2, 16, 8, 9, dtype=dtype)
    with torch.no_grad():
        check_compiled(block, x, backward=False, options=TRITON, rule="distribution")
    assert "aten.convolution.default" in _graph().fused_ops


@MUST_NOT_FAIL
def test_training_forward_and_backward_with_the_residual():
    """Training: the forward's convolution and epilogue run in the template; the backward's
    ``convolution_backward`` stays ATen and reads the saved input and weight, as before."""
    torch.manual_seed(0)
    block = _DepthwiseBlock(6, 3, activation=nn.ReLU6(), residual=True).train()
    x = torch.randn(2, 6, 7, 5, requires_grad=True)
    check_compiled(block, x, options=TRITON)
    forward = _graph("forward")
    assert "aten.convolution.default" in forward.fused_ops
    assert "aten.convolution_backward.default" in _graph("backward").externs


@MUST_NOT_FAIL
def test_one_kernel_reads_the_input_and_writes_the_activation():
    """Structure: the convolution and its whole epilogue are one kernel over the output's space,
    the convolution's own output never stored."""
    torch.manual_seed(0)
    block = _DepthwiseBlock(8, 3).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        check_compiled(block, x, backward=False, options=TRITON)
    graph = _graph()
    conv_kernels = [r for r in graph.refused.values() if "convolution" in r]
    assert not conv_kernels, graph.refused
    assert not graph.externs, graph.externs  # batch norm folded per call, conv + epilogue: all generated


def test_what_stays_with_cudnn_says_why():
    """A grouped (not depthwise) and an ordinary convolution stay ATen externs, the reason in the
    fusion report; with both backends and no measurement, a depthwise one stays too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 1), nn.ReLU()).eval()
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        check_compiled(model, x, backward=False, options=TRITON)
    graph = _graph()
    assert graph.externs.count("aten.convolution.default") == 2
    assert any("not depthwise" in r for r in graph.refused.values()), graph.refused
    block = _DepthwiseBlock(8, 3).eval()
    with torch.no_grad():
        check_compiled(block, x, backward=False, options={"gemm_backends": ("aten", "triton")})
    graph = _graph()
    assert "aten.convolution.default" in graph.externs
    assert any("no measurement" in r and "cuDNN" in r for r in graph.refused.values()), graph.refused


@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["default", "cuda_graphs"])
def test_a_measured_choice_is_kept_with_the_bytes_charged_to_cudnn(tmp_path, cuda_graphs):
    """Both backends and autotune: the depthwise group is measured (its kernel with the epilogue,
    against the convolution through ATen plus the epilogue's bytes) and the faster kept on disk;
    under ``cuda_graphs`` (GPU time alone) under a key of its own."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.decompositions import decomposition_table
    from ait_dynamo.passes.fusion import build_plan

    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True, "cuda_graphs": cuda_graphs}, environ={})
    x, w = torch.randn(2, 6, 5, 5), torch.randn(6, 1, 3, 3)
    gm = make_fx(lambda x, w: (torch.relu(F.conv2d(x, w, padding=1, groups=6)),),
                 decomposition_table=decomposition_table(config))(x, w)
    timings = iter([1.0, 2.0])  # template 1.0 ms, ATen 2.0 ms
    timed_sites = []

    def bench(fn):
        fn()  # both sides really run (the template through the interpreter)
        timed_sites.extend(c.cell_contents for c in fn.__closure__ or () if isinstance(c.cell_contents, LaunchSite))
        return next(timings)

    gemm_tuning._decisions.clear()
    decisions = gemm_tuning.choose_gemm_backends(gm, config, lambda m: build_plan(gm, config, m), bench=bench,
                                                 device_name="test-device")
    (conv,) = [n.name for n in gm.graph.nodes if n.target is torch.ops.aten.convolution.default]
    assert decisions == {conv: True}
    plan, _ = build_plan(gm, config, decisions)
    assert [getattr(s, "kind", "extern") for s in plan.steps] == ["conv"]
    ((key, record),) = json.loads((tmp_path / "gemm_choice" / "test_device.json").read_text()).items()
    assert record["template"] and record["aten_bytes"] == 2 * 2 * 6 * 5 * 5 * 4  # the ReLU: read + write
    assert record["cuda_graphs"] == cuda_graphs and key.endswith("|cuda_graphs") == cuda_graphs
    # the template is timed as the wrapper runs it: through a launch site past its first call
    (site,) = timed_sites
    assert site.kind == "conv" and site.launch != site._first


def _conv_kernel(block: nn.Module, x: torch.Tensor, tmp_path) -> str:
    """The name of the kernel the convolution's group became (from the plan ait writes)."""
    with torch.no_grad():
        check_compiled(block, x, backward=False, options={**TRITON, "debug_dir": str(tmp_path)})
    (plan,) = tmp_path.glob("*/plan.txt")
    (line,) = [line for line in plan.read_text().splitlines() if " conv kernel_" in line]
    return line.split()[2].rstrip(":")


def test_a_failing_template_runs_through_aten_with_one_warning(tmp_path):
    """A template kernel that fails to compile: the group (convolution and epilogue) runs through
    ATen from then on, with one warning, and the results stay right."""
    import warnings

    from ait_dynamo import faults
    from ait_dynamo.kernels import runtime

    torch.manual_seed(0)
    block = _DepthwiseBlock(6, 3).eval()
    x = torch.randn(2, 6, 5, 4)
    kernel = _conv_kernel(block, x, tmp_path)
    runtime.BROKEN.clear()
    with faults.inject("compile", kernel=kernel, graph="inference"), torch.no_grad(), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_compiled(block, x, backward=False, options=TRITON)
    messages = [str(w.message) for w in caught if "ait_dynamo" in str(w.message)]
    assert len(messages) == 1 and "injected compile failure" in messages[0], messages
    assert len(runtime.BROKEN) == 1
    runtime.BROKEN.clear()


def test_a_wrong_template_is_caught_by_the_numerics_guard(tmp_path):
    """verify=True: a template whose epilogue stores a wrong value is found on the first call and
    retired; the results are right."""
    from ait_dynamo import faults
    from ait_dynamo.kernels import runtime

    torch.manual_seed(0)
    block = _DepthwiseBlock(6, 3).eval()
    x = torch.randn(2, 6, 5, 4)
    kernel = _conv_kernel(block, x, tmp_path)
    with faults.inject("wrong_result", kernel=kernel, graph="inference"), torch.no_grad(), \
            pytest.warns(RuntimeWarning):
        check_compiled(block, x, backward=False, options={**TRITON, "verify": True})
    assert kernel in _graph().verify_failures
    runtime.BROKEN.clear()


@MUST_NOT_FAIL
def test_the_input_may_be_a_view_into_a_larger_tensor():
    """A channel slice of a channels-last tensor (MobileNet-style splits, Inception branches): the
    template reads the base through the slice's strides and offset."""
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(5, 5, 3, padding=1, groups=5, bias=True)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(t[:, 2:7]))

    torch.manual_seed(0)
    x = torch.randn(2, 9, 6, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        check_compiled(Branch().eval(), x, backward=False, options=TRITON)
    graph = _graph()
    assert "aten.convolution.default" in graph.fused_ops and "aten.convolution.default" not in graph.externs


def test_the_heuristic_fills_the_gpu_and_skips_tiles_wider_than_the_channels():
    from ait_dynamo.kernels import depthwise
    from ait_dynamo.kernels.gemm_configs import SMS

    mobilenet = (32, 240, 28, 28, 3, 1)  # MobileNetV3's 240-channel 3x3 layer at batch 32
    block_m, block_n, _, rows, cols = depthwise.heuristic(mobilenet)
    assert rows == cols == 0  # 3x3: pixel tiles without measuring
    assert depthwise.programs(mobilenet, (block_m, block_n, 4, 0, 0)) >= SMS and block_n <= 2 * 240
    assert depthwise.heuristic((1, 8, 7, 7, 3, 1)) == (32, 32, 2, 0, 0)  # too small to fill the GPU: the most programs
    assert all(c[1] <= 32 for c in depthwise.candidates((10, 16, 30, 33, 3, 1)))  # 16 channels: no 64-wide tiles
    # 32 channels (EfficientNet-B0 at batch 32): 32-wide tiles only, a 128 x 32 tile first
    efficientnet = (32, 32, 112, 112, 3, 1)
    assert depthwise.heuristic(efficientnet) == (128, 32, 4, 0, 0)
    assert {c[1] for c in depthwise.candidates(efficientnet)} == {32}
    assert [depthwise.widest_tile(c) for c in (1, 16, 32, 33, 72, 240)] == [32, 32, 32, 64, 128, 256]


def test_tilings_chosen_and_measured_and_every_grid_covers_the_output():
    """ConvNeXt's 7x7 (stride 1) takes column groups without measuring, and ``autotune`` measures
    only column groups there (they beat every pixel and row tile on the GPU); 3x3 and 5x5 kernels
    take pixel tiles (row tiles lost to them) and ``autotune`` measures all three tilings for
    stride 1, row tiles no wider than the output's rows rounded up (ConvNeXt's last stage is 7
    wide), column groups only for a horizontal stride of 1, row tiles only for a vertical one;
    every configuration's grid covers the output."""
    from ait_dynamo.kernels import depthwise
    from ait_dynamo.kernels.gemm_configs import SMS

    stage_one, stage_four = (32, 96, 56, 56, 7, 1), (32, 768, 7, 7, 7, 1)
    every_tiling = {(False, False), (True, False), (False, True)}
    for shape in (stage_one, stage_four):
        config = depthwise.heuristic(shape)
        assert config[3] == 0 and config[4] > 0 and depthwise.programs(shape, config) >= SMS, config
        found = depthwise.candidates(shape)
        assert found[0] == config and len(found) == len(set(found)) == len(depthwise.COLUMN_CONFIGS)
        assert all(c[4] > 0 for c in found)
    five_wide = (32, 768, 7, 7, 5, 1)
    assert depthwise.heuristic(five_wide)[3:] == (0, 0)
    assert {(c[3] > 0, c[4] > 0) for c in depthwise.candidates(five_wide)} == every_tiling
    assert all(c[0] // c[3] <= 8 for c in depthwise.candidates(five_wide) if c[3] > 0)
    mobilenet = (32, 240, 28, 28, 3, 1)
    assert depthwise.heuristic(mobilenet)[3:] == (0, 0)
    assert {(c[3] > 0, c[4] > 0) for c in depthwise.candidates(mobilenet)} == every_tiling
    assert all(c[3:] == (0, 0) for c in depthwise.candidates((32, 72, 28, 28, 5, 2)))  # stride 2
    assert all(c[3] == 0 for c in depthwise.candidates((32, 72, 1, 28, 5, 1)))  # one output row
    assert all(c[4] == 0 for c in depthwise.candidates((32, 72, 28, 1, 5, 1)))  # one output column
    across = depthwise.candidates((32, 72, 28, 14, 5, 1, 5, 2))  # stride 1 down, 2 across: rows, no columns
    assert any(c[3] > 0 for c in across) and all(c[4] == 0 for c in across)
    assert all(c[4] <= 8 for c in depthwise.candidates((32, 72, 28, 3, 3, 1)))  # 3 wide: groups no wider than 8
    for shape in (stage_one, stage_four, five_wide, (3, 20, 11, 13, 7, 1), (3, 20, 11, 13, 5, 1)):
        for config in depthwise.candidates(shape):
            block_m, block_n, _, rows, cols = config
            if rows:
                width = block_m // rows
                tiles = shape[0] * -(-shape[2] // rows) * -(-shape[3] // width)
                assert rows * width == block_m and tiles * rows * width >= shape[0] * shape[2] * shape[3]
            if cols:
                groups = shape[0] * shape[2] * depthwise.column_groups(shape[3], cols)
                tiles = depthwise.programs(shape, config) // -(-shape[1] // block_n)
                assert block_m % cols == 0 and tiles * (block_m // cols) >= groups
            assert depthwise.programs(shape, config) * block_m * block_n >= shape[0] * shape[1] * shape[2] * shape[3]


def test_column_taps_list_each_input_column_once_with_the_outputs_it_feeds():
    """A 7x7 kernel, stride 1: 14 input columns for a group of 8, the first feeding column 0
    through tap 0 alone, the eighth (offset 7) columns 1 to 7; stride 2: offsets j * 2 + tap."""
    from ait_dynamo.kernels import depthwise

    g = {"kw": 7, "sw": 1, "dw": 1}
    taps = depthwise.column_taps(g)
    assert [t[0] for t in taps] == list(range(14))
    assert taps[0] == (0, 0, [(0, 0)]) and taps[7] == (7, 1, [(j, 7 - j) for j in range(1, 8)])
    assert sum(len(fed) for _, _, fed in taps) == 8 * 7
    strided = depthwise.column_taps({"kw": 3, "sw": 2, "dw": 1})
    assert [t[0] for t in strided] == list(range(17)) and strided[2] == (2, 0, [(0, 2), (1, 0)])


def _check_tiling(monkeypatch, config, shape, kernel, stride, dilation) -> None:
    """A depthwise block (convolution with bias, batch norm, SiLU) on a channels-last input, its
    convolution run by the template at ``config`` under the interpreter, against eager."""
    from ait_dynamo.kernels import depthwise

    monkeypatch.setattr(depthwise, "INTERPRETER_CONFIG", config)
    torch.manual_seed(0)
    channels = shape[1]
    block = _DepthwiseBlock(channels, 3, activation=nn.SiLU()).eval()
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    block.conv = nn.Conv2d(channels, channels, (kh, kw), stride, (dilation * (kh // 2), dilation * (kw // 2)),
                           dilation=dilation, groups=channels, bias=True)
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    block = block.to(memory_format=torch.channels_last)
    with torch.no_grad():
        check_compiled(block, x, backward=False, options=TRITON, check_strides=True)
    graph = _graph()
    assert "aten.convolution.default" in graph.fused_ops and "aten.silu.default" not in graph.externs
    assert graph.fallback_reason is None


@MUST_NOT_FAIL
@pytest.mark.parametrize("config", [(32, 32, 2, 4, 0), (64, 32, 4, 8, 0), (16, 32, 2, 2, 0)], ids=["4x8", "8x8", "2x8"])
@pytest.mark.parametrize("shape, kernel, stride, dilation", [
    ((2, 12, 9, 7), 3, 1, 1),      # odd sizes: the last row tile and column tile are partial
    ((1, 5, 6, 6), 5, 2, 1),       # stride 2: every input row feeds one output row at most
    ((3, 20, 11, 13), 7, 1, 1),    # ConvNeXt's 7x7, 20 channels over 32-wide tiles
    ((2, 8, 10, 10), 3, 1, 2),     # dilation: tap rows every other input row
    ((2, 3, 1, 4), 3, 1, 1),       # a 1-high image: the tile's other rows are past the output
    ((1, 4, 7, 3), (5, 3), (1, 2), 1),  # a tall kernel, horizontal stride 2
], ids=["3x3", "5x5-stride2", "7x7", "dilated", "one-row", "5x3-stride1x2"])
def test_row_tiles_compute_what_eager_does(monkeypatch, config, shape, kernel, stride, dilation):
    """The row tiling under the interpreter on every shape the pixel tiling is tested on, with
    tiles of 2, 4 and 8 rows, channels-last, the epilogue (batch norm, activation, residual) on
    the tile."""
    _check_tiling(monkeypatch, config, shape, kernel, stride, dilation)


@MUST_NOT_FAIL
@pytest.mark.parametrize("config", [(32, 32, 2, 0, 8), (16, 32, 2, 0, 4), (64, 64, 4, 0, 8)],
                         ids=["8-columns", "4-columns", "8-columns-64-channels"])
@pytest.mark.parametrize("shape, kernel, stride, dilation", [
    ((2, 12, 9, 7), 3, 1, 1),      # 7 columns: one group of 8 with its last column past the output
    ((1, 5, 6, 6), 5, 2, 1),       # stride 2: a group reads every other input column
    ((3, 20, 11, 13), 7, 1, 1),    # ConvNeXt's 7x7, 20 channels over 32-wide tiles, 13 = 8 + 5 columns
    ((2, 8, 10, 10), 3, 1, 2),     # dilation: taps every other input column
    ((2, 3, 4, 1), 3, 1, 1),       # a 1-wide image: every group's other columns are past the output
    ((1, 4, 7, 9), (3, 5), (2, 1), 1),  # a wide kernel, vertical stride 2
], ids=["3x3", "5x5-stride2", "7x7", "dilated", "one-column", "3x5-stride2x1"])
def test_column_groups_compute_what_eager_does(monkeypatch, config, shape, kernel, stride, dilation):
    """The column tiling under the interpreter on every shape the row tiling is tested on, groups
    of 4 and 8 columns, channels-last, the epilogue (batch norm, activation) on the tile: the
    accumulators of a group's columns land on their own pixels."""
    _check_tiling(monkeypatch, config, shape, kernel, stride, dilation)


def test_the_graph_measurement_falls_back_where_capture_fails(monkeypatch):
    """``do_bench_graph`` (GPU time, under ``cuda_graphs``): a call that cannot be captured in a
    CUDA graph is timed as without graphs, not given up."""
    import triton.testing

    from ait_dynamo.kernels import gemm_tuning

    def refuse(fn, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", refuse)
    monkeypatch.setattr(gemm_tuning, "do_bench", lambda fn: 0.25)
    assert gemm_tuning.do_bench_graph(lambda: None) == 0.25


# Compiles a generated kernel for sm_90 with Triton's own LLVM and ptxas (no GPU needed) and prints
# each configuration's stack frame, where ptxas puts spilled registers. In a process of its own:
# Triton cannot compile for a GPU in a process that runs its interpreter (TRITON_INTERPRET=1).
_HOPPER_STACKS = """
import importlib.util, json, os, re, subprocess, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
kernel_path, cubin_path, configs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("depthwise_kernel", kernel_path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
stacks = {}
for block_m, block_n, warps, rows, cols in configs:
    values = {"BLOCK_M": block_m, "BLOCK_N": block_n, "ROWS": rows, "BLOCK_W": block_m // rows if rows else 1,
              "COLS": cols}
    signature = {name: "*fp16" for name in ("in_ptr0", "in_ptr1", "in_ptr2", "out_ptr0")}
    signature.update({name: "constexpr" for name in values})
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(4)}  # as a launch specializes them
    compiled = triton.compile(ASTSource(module.kernel_0, signature, constexprs=values, attrs=aligned),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    with open(cubin_path, "wb") as f:
        f.write(compiled.asm["cubin"])
    usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", cubin_path],
                           capture_output=True, text=True, check=True).stdout
    stacks[str((block_m, block_n, warps, rows, cols))] = int(re.search(r"STACK:(\\d+)", usage).group(1))
print(json.dumps(stacks))
"""


def _hopper_stack_bytes(source: str, configs: list, tmp_path) -> dict[str, int]:
    import os
    import subprocess
    import sys

    kernel = tmp_path / "depthwise_kernel.py"
    kernel.write_text("import triton\nimport triton.language as tl\n" + source)
    script = tmp_path / "hopper_stacks.py"
    script.write_text(_HOPPER_STACKS)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton_cache")
    done = subprocess.run([sys.executable, str(script), str(kernel), str(tmp_path / "kernel.cubin"),
                           json.dumps([list(c) for c in configs])], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_7x7_kernel_compiles_for_hopper_without_spilling(tmp_path, monkeypatch):
    """ConvNeXt-T's first 7x7 layer (96 channels, 56x56, fp16, channels-last): every configuration
    of the three tilings (pixel, row, column) compiles for sm_90 with no stack frame. Unrolled
    over all 49 taps, two of them spilled 14 KB a thread (triton 3.6) and took 3.3 ms a call on
    the H100 against cuDNN's 92 us (benchmarks/results/nvidia-h100/session_1205c/depthwise_rows/)."""
    import os

    import triton
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.kernels import depthwise, gemm_choice
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not all(os.path.exists(os.path.join(tools, tool)) for tool in ("ptxas", "cuobjdump")):
        pytest.skip("this Triton has no bundled ptxas / cuobjdump")
    monkeypatch.setattr(gemm_choice, "triton_runs_on", lambda device: True)  # the template on CUDA
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty_strided((32, 96, 56, 56), (301056, 1, 5376, 96), device="cuda", dtype=torch.float16)
        w = torch.empty(96, 1, 7, 7, device="cuda", dtype=torch.float16)
        b = torch.empty(96, device="cuda", dtype=torch.float16)
        gm = make_fx(lambda x, w, b: F.conv2d(x, w, b, 1, 3, 1, 96), tracing_mode="fake")(x, w, b)
    config = AitConfig.create({"cache_dir": str(tmp_path), **TRITON}, environ={})
    work = run_passes(gm, config)
    plan, _ = build_plan(work, config)
    module = generate_wrapper(plan, work, "probe", triton_runs_on=lambda device: True)
    (kernel,) = [k for k in module.kernels if k.kind == "conv"]
    # every configuration of every tiling: autotune measures only column groups for this kernel,
    # but pixel and row tiles for narrower ones, whose loops have the same shape
    configs = [*depthwise.CONFIGS, *depthwise.ROW_CONFIGS, *depthwise.COLUMN_CONFIGS]
    stacks = _hopper_stack_bytes(kernel.source, configs, tmp_path)
    assert len(stacks) == len(configs)
    assert all(stack == 0 for stack in stacks.values()), stacks


def _fake_cuda_conv(shape, kernel, stride=1, dtype=torch.float16, channels_last=True):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    n, c, h, w = shape
    with FakeTensorMode(allow_non_fake_inputs=True):
        strides = (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)
        x = torch.empty_strided((n, c, h, w), strides, device="cuda", dtype=dtype)
        weight = torch.empty(c, 1, kernel, kernel, device="cuda", dtype=dtype)
        bias = torch.empty(c, device="cuda", dtype=dtype)
        gm = make_fx(lambda x, w, b: F.conv2d(x, w, b, stride, kernel // 2, 1, c), tracing_mode="fake")(x, weight, bias)
    (conv,) = [n for n in gm.graph.nodes if n.target is torch.ops.aten.convolution.default]
    return conv


def test_without_a_measurement_cuda_runs_only_7x7_depthwise_layers_as_the_template(monkeypatch):
    """The default (both backends, no measurement): ConvNeXt's 7x7 stride-1 layers on CUDA take
    the template (it beat cuDNN on all four of ConvNeXt-T's on an H100), at a configuration whose
    channel tile divides the channels; 3x3 / 5x5 layers, stride 2, fp32, an NCHW input and a
    measurement that chose cuDNN keep cuDNN; only ``"aten"`` keeps cuDNN everywhere."""
    from ait_dynamo.kernels import depthwise, gemm_choice

    monkeypatch.setattr(gemm_choice, "triton_runs_on", lambda device: True)
    both = ("aten", "triton")
    convnext = _fake_cuda_conv((32, 96, 56, 56), 7)
    assert depthwise.refusal(convnext) is None
    chosen, why = gemm_choice.backend_choice(convnext, both, {})
    assert chosen and "7x7" in why
    assert gemm_choice.backend_choice(convnext, both, {convnext.name: False}) == (False, "measured: cuDNN faster")
    assert not gemm_choice.backend_choice(convnext, ("aten",), {})[0]
    for other in (_fake_cuda_conv((32, 240, 28, 28), 3), _fake_cuda_conv((32, 72, 56, 56), 5),
                  _fake_cuda_conv((32, 96, 56, 56), 7, stride=2), _fake_cuda_conv((2, 96, 14, 14), 7, dtype=torch.float32),
                  _fake_cuda_conv((2, 96, 14, 14), 7, channels_last=False)):
        chosen, why = gemm_choice.backend_choice(other, both, {})
        assert not chosen and "cuDNN" in why, (other, why)
    # column groups of 8 in 32-wide channel tiles: 96 channels make three full tiles, not a 64-wide
    # one half idle in its second
    for channels in (96, 192, 384, 768):
        assert depthwise.heuristic((32, channels, 56, 56, 7, 1)) == (128, 32, 4, 0, 8)


def _convnext_head(x, w, b, gamma, beta):
    """ConvNeXt's depthwise 7x7 convolution, its bias added as the layout pass leaves it (an
    epilogue op), the permute to channels-last and the LayerNorm."""
    y = (F.conv2d(x, w, None, 1, 3, 1, x.shape[1]) + b.view(-1, 1, 1)).permute(0, 2, 3, 1)
    return (F.layer_norm(y, (x.shape[1],), gamma, beta, 1e-6),)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_the_layer_norms_upcast_stays_out_of_the_template(monkeypatch, dtype):
    """The LayerNorm after a 16-bit template computes in float32: its cast joins the LayerNorm's
    kernel, which reads the template's 16-bit output, instead of the template writing a float32
    copy for it (with those copies the template bought ConvNeXt-T nothing on an H100)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.kernels import gemm_choice
    from ait_dynamo.passes.decompositions import decomposition_table
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.plan import FusionGroup
    from ait_dynamo.passes.pipeline import run_passes

    monkeypatch.setattr(gemm_choice, "triton_runs_on", lambda device: True)
    config = AitConfig.create(TRITON, environ={})
    args = (torch.randn(2, 32, 9, 9, dtype=dtype).contiguous(memory_format=torch.channels_last),
            torch.randn(32, 1, 7, 7, dtype=dtype), torch.randn(32, dtype=dtype), torch.randn(32, dtype=dtype),
            torch.randn(32, dtype=dtype))
    gm = make_fx(_convnext_head, decomposition_table=decomposition_table(config))(*args)
    work = run_passes(gm, config)
    plan, _ = build_plan(work, config)
    groups = [s for s in plan.steps if isinstance(s, FusionGroup)]
    (template,) = [g for g in groups if any(n.target is torch.ops.aten.convolution.default for n in g.nodes)]
    casts = (torch.ops.aten._to_copy.default, torch.ops.prims.convert_element_type.default)
    assert not any(n.target in casts for n in template.nodes), [n.name for n in template.nodes]
    assert all(o.meta["val"].dtype == dtype for o in template.outputs)
    (norm,) = [g for g in groups if g.reduced]
    assert any(n.target in casts for n in norm.nodes) and len(groups) == 2


@MUST_NOT_FAIL
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_convnext_head_computes_what_eager_does(dtype):
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(24, 24, 7, padding=3, groups=24, bias=False)
            self.bias = nn.Parameter(torch.randn(24))
            self.norm = nn.LayerNorm(24, eps=1e-6)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.norm((self.conv(t) + self.bias.view(-1, 1, 1)).permute(0, 2, 3, 1))

    torch.manual_seed(0)
    head = Head().eval().to(dtype)
    x = torch.randn(2, 24, 11, 10, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        check_compiled(head, x, backward=False, options=TRITON, rule="distribution")
    graph = _graph()
    assert "aten.convolution.default" in graph.fused_ops and "aten.convolution.default" not in graph.externs


def test_ahead_of_launch_compilation_specialises_like_the_launch(monkeypatch, tmp_path):
    """``kernels/precompile.py`` compiles a depthwise template with its launch's argument dtypes
    and ints, at the configuration the launch takes without ``autotune``."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.cache import load_module
    from ait_dynamo.kernels import depthwise
    from ait_dynamo.kernels import precompile as precompile_module
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    def fn(x, w, r):
        return (torch.relu(F.conv2d(x, w, None, 1, 3, 1, 16)) + r[:, :, :9, :9],)

    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    r = torch.randn(2, 16, 11, 12)  # a sliced residual: strides among the launch's ints
    gm = make_fx(fn)(x, torch.randn(16, 1, 7, 7), r)
    config = AitConfig.create({"cache_dir": str(tmp_path), **TRITON}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    generated = generate_wrapper(plan, gm, "test", triton_runs_on=lambda device: True)
    (conv,) = [k for k in generated.kernels if k.kind == "conv"]
    assert conv.warmup is not None
    module, _ = load_module(generated.source, str(tmp_path))
    launched = {}

    def record(kernel, tensors, ints, shape, tune=None):
        launched[kernel] = (tuple(t.dtype for t in tensors), tuple(ints))

    monkeypatch.setattr(depthwise, "launch", record)
    module.make_call(generated.constants)([x, torch.randn(16, 1, 7, 7), r])
    assert launched[getattr(module, conv.name)] == conv.warmup

    warmed = []

    class FakeKernel:
        def warmup(self, *args, grid, **kwargs):
            warmed.append((args, kwargs))

    precompile_module._warm(FakeKernel(), conv.warmup, conv.kind, conv.persistent, conv.column, conv.gemm)
    config = depthwise.heuristic(conv.gemm)
    ((args, kwargs),) = warmed
    assert args == (*conv.warmup[0], *conv.warmup[1])
    assert kwargs == {**depthwise.constexprs(config), "num_warps": config[2]}
    assert precompile_module._has_work(conv)
