"""The depthwise-convolution template on CUDA (skipped without a GPU): fp16 / bf16 / fp32 on
channels-last activations of the model suite's sizes, the epilogue fused, forward and backward;
and the choice by measurement against cuDNN (gemm_backends aten+triton, autotune) kept on disk."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.kernels import gemm_tuning, runtime
from utils import check_compiled

pytestmark = [pytest.mark.skipif(not runtime.triton_runs_on("cuda"), reason="needs CUDA and Triton"), pytest.mark.usefixtures("generated_kernels_must_not_fail")]

TRITON = {"gemm_backends": ("triton",)}


def _block(channels: int, kernel: int, stride: int, dtype: torch.dtype) -> nn.Module:
    block = nn.Sequential(nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False),
                          nn.BatchNorm2d(channels), nn.Hardswish())
    with torch.no_grad():
        block[1].running_mean.uniform_(-0.5, 0.5)
        block[1].running_var.uniform_(0.5, 2.0)
    return block.to("cuda", dtype).to(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("channels, size, kernel, stride", [(72, 56, 5, 2), (240, 28, 3, 1), (33, 17, 7, 1)],
                         ids=["5x5-s2", "3x3-240", "7x7-ragged"])
def test_inference_in_channels_last(dtype, channels, size, kernel, stride):
    torch.manual_seed(0)
    block = _block(channels, kernel, stride, dtype).eval()
    x = torch.randn(8, channels, size, size, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        check_compiled(block, x, backward=False, options=TRITON, check_strides=True, rule="distribution")
    graph = [g for g in metrics.compiled_graphs if g.kind == "inference"][-1]
    assert "aten.convolution.default" in graph.fused_ops and "aten.convolution.default" not in graph.externs


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_by_default_7x7_layers_take_the_template_and_3x3_ones_cudnn(dtype):
    """Default options (no measurement): a ConvNeXt-style 7x7 stride-1 layer runs as the template
    with its epilogue (it beat cuDNN on ConvNeXt-T's four on an H100), a 3x3 one through cuDNN."""
    for kernel, template in ((7, True), (3, False)):
        torch.manual_seed(0)
        block = _block(96, kernel, 1, dtype).eval()
        x = torch.randn(4, 96, 21, 21, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            check_compiled(block, x, backward=False, check_strides=True, rule="distribution")
        graph = [g for g in metrics.compiled_graphs if g.kind == "inference"][-1]
        assert ("aten.convolution.default" in graph.fused_ops) == template, (kernel, graph.fused_ops)
        assert ("aten.convolution.default" in graph.externs) != template, (kernel, graph.externs)


@pytest.mark.parametrize("channels, size, kernel", [(96, 28, 7), (33, 13, 7), (40, 15, 3)],
                         ids=["7x7-96", "7x7-ragged", "3x3-40"])
def test_every_candidate_configuration_computes_what_eager_does(monkeypatch, channels, size, kernel):
    """``autotune`` may pick any candidate, compiled for the GPU: column groups for a 7x7 kernel,
    pixel, row and column tiles for a 3x3 one."""
    from ait_dynamo.kernels import depthwise

    torch.manual_seed(0)
    block = _block(channels, kernel, 1, torch.float16).eval()
    x = torch.randn(4, channels, size, size, device="cuda", dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    configs = depthwise.candidates((4, channels, size, size, kernel, 1))
    tilings = {(c[3] > 0, c[4] > 0) for c in configs}
    assert tilings == ({(False, True)} if kernel == 7 else {(False, False), (True, False), (False, True)})
    for config in configs:
        monkeypatch.setattr(depthwise, "heuristic", lambda shape, chosen=config: chosen)
        with torch.no_grad():
            check_compiled(block, x, backward=False, options=TRITON, check_strides=True, rule="distribution")
        graph = [g for g in metrics.compiled_graphs if g.kind == "inference"][-1]
        assert "aten.convolution.default" in graph.fused_ops, config


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_training_step(dtype):
    torch.manual_seed(0)
    block = _block(48, 3, 1, dtype).train()
    x = torch.randn(4, 48, 20, 20, device="cuda", dtype=dtype, requires_grad=True)
    x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    check_compiled(block, x, options=TRITON, rule="distribution")
    forward = [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]
    assert "aten.convolution.default" in forward.fused_ops


@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["default", "cuda_graphs"])
def test_measured_choice_against_cudnn_is_stored(tmp_path, cuda_graphs):
    """Under ``cuda_graphs`` both sides are timed replayed in a CUDA graph (GPU time alone)."""
    torch.manual_seed(0)
    block = _block(96, 3, 1, torch.float16).eval()
    x = torch.randn(32, 96, 56, 56, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    gemm_tuning._decisions.clear()
    with torch.no_grad():
        check_compiled(block, x, backward=False, rule="distribution",
                       options={"gemm_backends": ("aten", "triton"), "autotune": True, "cache_dir": str(tmp_path),
                                "cuda_graphs": cuda_graphs})
    (stored,) = (tmp_path / "gemm_choice").glob("*.json")
    (record,) = json.loads(stored.read_text()).values()
    assert record["template_ms"] > 0 and record["aten_ms"] > 0 and record["aten_bytes"] > 0, record
    assert record["cuda_graphs"] == cuda_graphs
    graph = [g for g in metrics.compiled_graphs if g.kind == "inference"][-1]
    fused = "aten.convolution.default" in graph.fused_ops
    assert fused == record["template"], (record, graph.fused_ops)


def test_the_template_is_timed_through_the_direct_launch_path(tmp_path):
    """The measurement times the template as the generated wrapper runs it: a launch site bound
    to the compiled launcher (9c17fe4 timed the generic path, up to 3x its kernel time)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.config import AitConfig
    from ait_dynamo.kernels.launch_site import LaunchSite
    from ait_dynamo.passes.decompositions import decomposition_table
    from ait_dynamo.passes.fusion import build_plan

    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True}, environ={})
    x = torch.randn(8, 64, 28, 28, device="cuda", dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 1, 3, 3, device="cuda", dtype=torch.float16)
    gm = make_fx(lambda x, w: (torch.relu(F.conv2d(x, w, padding=1, groups=64)),),
                 decomposition_table=decomposition_table(config))(x, w)
    sites = []

    def bench(fn):
        fn()
        sites.extend(c.cell_contents for c in fn.__closure__ or () if isinstance(c.cell_contents, LaunchSite))
        return gemm_tuning.do_bench(fn)

    gemm_tuning._decisions.clear()
    gemm_tuning.choose_gemm_backends(gm, config, lambda m: build_plan(gm, config, m), bench=bench)
    (site,) = sites
    assert site.direct and site.bound is not None
