"""The Triton GEMM template's persistent TMA path (issue 14) on the CPU through Triton's interpreter,
which runs tensor descriptors: the interpreter's configuration is replaced by a persistent one,
so that four programs (the CPU's stand-in for the SM count) loop over the tiles and load the
operands through descriptors, their edges zero-filled. Forward and backward against fp64 for
each operand layout, a prologue, float32's blocked sum, fp16 / bf16; what makes an operand
ineligible (a batched product, a row pitch off 16 bytes) keeps the classic kernel alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import metrics
from ait_dynamo.kernels import codegen_gemm, gemm_configs, runtime
from utils import check_compiled, needs_cpu_triton

TRITON = {"gemm_backends": ("triton",)}

pytestmark = [needs_cpu_triton,
              pytest.mark.skipif(not codegen_gemm.tma_supported(), reason="Triton without tensor descriptors")]


@pytest.fixture(autouse=True)
def persistent(monkeypatch):
    """Every GEMM launch takes a persistent configuration of 16-element tiles; records the
    constexprs each launch passed."""
    launches: list[dict] = []
    monkeypatch.setattr(gemm_configs, "interpreter_config", lambda m, n, k: (16, 16, 16, 2, 1, 1, 1))
    launch = runtime.launch

    def recording(kernel, grid, args, constexprs, num_warps, num_stages=None):
        launches.append({**constexprs, "grid": grid})
        return launch(kernel, grid, args, constexprs, num_warps, num_stages)

    monkeypatch.setattr(runtime, "launch", recording)
    runtime.BROKEN.clear()
    yield launches
    assert not runtime.BROKEN, f"generated kernels failed: {runtime.BROKEN}"


def _randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).requires_grad_(True)


def _forward_kernels() -> int:
    graph = [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]
    assert graph.fallback_reason is None, graph.fallback_reason
    return len(graph.kernels)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_linear_gelu_through_descriptors(dtype, persistent):
    """nn.Linear's weight is B transposed: described as the [N, K] weight, its tiles transposed."""
    x, w, b = _randn(70, 48, dtype=dtype), _randn(40, 48, dtype=dtype), _randn(40, dtype=dtype)
    check_compiled(lambda x, w, b: F.gelu(F.linear(x, w, b)), x, w, b, options=TRITON, rule="distribution")
    assert _forward_kernels() == 1
    taken = [launch for launch in persistent if launch.get("PERSISTENT")]
    assert taken, persistent
    tiles = -(-70 // 16) * -(-40 // 16)
    assert all(launch["grid"][0] == min(tiles, 4) == launch["NUM_PROGRAMS"] for launch in taken)


@pytest.mark.parametrize("transpose_a", [False, True])
def test_both_layouts_of_each_operand(transpose_a, persistent):
    a = torch.randn(48, 64).t() if transpose_a else torch.randn(64, 48)  # [64, 48], M or K contiguous
    a.requires_grad_(True)
    b = _randn(48, 24)  # N contiguous
    check_compiled(lambda a, b: torch.relu(a @ b) * 2.0, a, b, options=TRITON)
    assert any(launch.get("PERSISTENT") for launch in persistent)


def test_long_k_float32_blocked_sum_and_ragged_edges(persistent):
    check_compiled(torch.mm, _randn(37, 300), _randn(300, 24), options=TRITON)
    assert any(launch.get("PERSISTENT") for launch in persistent)


def test_a_cast_prologue_reads_the_descriptor_tile(persistent):
    x = torch.randn(40, 32, dtype=torch.float16)
    w = torch.randn(32, 24)  # float32 weight cast to fp16 inside the kernel
    check_compiled(lambda x, w: x @ w.to(x.dtype), x, w, options=TRITON, backward=False)
    assert any(launch.get("PERSISTENT") for launch in persistent)


def test_ineligible_operands_keep_the_classic_kernel(persistent):
    """A batched product, a row pitch that is not a multiple of 16 bytes (K = 7 floats) and a
    broadcast operand are generated without the persistent path: the launches pass no PERSISTENT."""
    check_compiled(torch.bmm, _randn(3, 9, 16), _randn(3, 16, 8), options=TRITON, backward=False)
    check_compiled(torch.mm, _randn(9, 7), _randn(7, 8), options=TRITON, backward=False)
    check_compiled(lambda x, w: torch.mm(x.expand(8, 16), w), _randn(1, 16), _randn(16, 8), options=TRITON,
                   backward=False)  # a broadcast A: its rows do not step through memory
    assert persistent and not any("PERSISTENT" in launch for launch in persistent)


def test_a_misaligned_operand_takes_the_classic_path(persistent, tmp_path):
    """A descriptor's base must be 16-byte aligned: the kernel launched on an operand that starts 4
    bytes into its storage runs the same tiles without descriptors, and still computes right."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.cache import load_module
    from ait_dynamo.config import AitConfig
    from ait_dynamo.kernels import gemm_choice, gemm_tuning
    from ait_dynamo.kernels.codegen import generate_kernel
    from ait_dynamo.kernels.op_table import HELPERS_SOURCE
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes
    from ait_dynamo.passes.plan import FusionGroup

    gm = make_fx(lambda a, b: torch.relu(a @ b))(torch.randn(32, 16), torch.randn(16, 16))
    config = AitConfig.create({**TRITON, "cache_dir": str(tmp_path)}, environ={})
    plan, _ = build_plan(run_passes(gm, config), config)
    group = next(s for s in plan.steps if isinstance(s, FusionGroup) and s.kind == "gemm")
    names = gemm_tuning._Names()
    kernel = generate_kernel(group, names)
    assert "PERSISTENT: tl.constexpr" in kernel.source
    module, _ = load_module(gemm_tuning._MODULE_HEADER + "\n" + HELPERS_SOURCE + "\n\n" + kernel.source, str(tmp_path))
    tensors, ints = gemm_tuning._kernel_arguments(group, kernel, names)
    _, a_node, b_node = gemm_choice.operands(gemm_choice.gemm_node(group))
    a_index = kernel.args.tensors.index(names.by_node[a_node])
    storage = torch.randn(1 + tensors[a_index].numel())
    tensors[a_index] = storage[1:].view_as(tensors[a_index]).copy_(tensors[a_index])  # 4 bytes in
    runtime.launch_gemm(getattr(module, kernel.name), tensors, ints, kernel.gemm, kernel.gemm_dtype)
    assert persistent and persistent[-1]["PERSISTENT"] == 0
    by_name = dict(zip(kernel.args.tensors, tensors))
    a, b = by_name[names.by_node[a_node]], by_name[names.by_node[b_node]]
    (out,) = [by_name[buffer] for _, buffer in kernel.out_buffers]
    torch.testing.assert_close(out, torch.relu(a @ b))


def test_candidates_offer_the_persistent_configs_only_for_kernels_with_the_path():
    plain = gemm_configs.candidates(1, 4096, 4096, 4096, torch.bfloat16)
    offered = gemm_configs.candidates(1, 4096, 4096, 4096, torch.bfloat16, persistent=True)
    assert not any(gemm_configs.is_persistent(c) for c in plain)
    assert [c for c in offered if not gemm_configs.is_persistent(c)] == plain
    assert any(gemm_configs.is_persistent(c) for c in offered)
    assert all(gemm_configs.fits(c, torch.bfloat16) for c in offered)
    values = gemm_configs.constexprs((128, 256, 64, 8, 8, 3, 1), 4096, False, programs=132)
    assert values["PERSISTENT"] == 1 and values["NUM_PROGRAMS"] == 132
    classic = gemm_configs.constexprs((128, 256, 64, 8, 8, 3), 4096, False, programs=1)
    assert classic["PERSISTENT"] == 0 and classic["NUM_PROGRAMS"] == 1
