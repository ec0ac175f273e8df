"""0-d CPU tensors read by kernels by value (``passes/host_scalars.py``): Dynamo's float attributes
under ``dynamic=True``, and any 0-d CPU operand of a CUDA op."""

from __future__ import annotations

import pathlib

import pytest
import torch
from functorch.compile import aot_function, make_boxed_func
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels.wrapper import generate_wrapper
from ait_dynamo.partitioners import partition_function
from ait_dynamo.passes.decompositions import decomposition_table
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.host_scalars import is_host_scalar_input, is_host_scalar_value
from ait_dynamo.passes.pipeline import run_passes
from ait_dynamo.passes.plan import ExternCall, FusionGroup
from utils import assert_close_to_reference, needs_cpu_triton


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # as Dynamo hands over Llama's RMSNorm under dynamic=True: eps and scale 0-d float64 CPU tensors
    mean = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(mean + eps.to(torch.float32))) * scale.to(torch.float32)


def _cuda_plan(fn, *shapes_and_devices, tmp_path: pathlib.Path):
    """``fn`` traced on fake tensors (CUDA ones need no GPU), planned and its wrapper written as
    for a CUDA machine."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        args = [torch.empty(shape, device=device, dtype=dtype) for shape, device, dtype in shapes_and_devices]
        gm = make_fx(fn, tracing_mode="fake")(*args)
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    work = run_passes(gm, config)
    plan, refusals = build_plan(work, config)
    return plan, refusals, generate_wrapper(plan, work, "test", triton_runs_on=lambda device: True).source


def test_cuda_rms_norm_with_cpu_scalars_is_one_kernel_that_takes_their_values(tmp_path):
    """On CUDA the CPU scalars' casts, the add and the scale joined no kernel before (the planner
    refused ops that move data between devices): two kernels, two CPU casts, two ATen calls."""
    plan, refusals, source = _cuda_plan(
        _rms_norm, ((6, 24), "cuda:0", torch.float32), ((24,), "cuda:0", torch.float32),
        ((), "cpu", torch.float64), ((), "cpu", torch.float64), tmp_path=tmp_path)
    groups = [s for s in plan.steps if isinstance(s, FusionGroup)]
    externs = [s for s in plan.steps if isinstance(s, ExternCall)]
    assert len(groups) == 1 and not externs, (plan.describe(), refusals)
    assert "kernel_0_site.launch(x_1, weight_1, mul_2, eps_1.item(), scale_1.item())" in source, source
    assert "moves data between devices" not in str(refusals)


def test_cuda_training_rms_norm_forward_saves_the_scalars_not_their_casts(tmp_path):
    """Training: the partitioner saved the float32 casts (4 bytes each, the float64 inputs 8), so
    the forward returned them, CPU results with two readers that no CUDA kernel computes: on an
    H100 the RMSNorm of tests/test_dynamic_shapes.py compiled to kernels ['kernel_0', 'kernel_1',
    'kernel_1', 'kernel_2'] (one ATen-run cast group per scalar) and ATen's add and mul. The
    forward and backward are partitioned here on the CPU as the backend does, then retraced on
    fake CUDA tensors (the scalars stay on the CPU) and planned as on a CUDA machine."""
    config = AitConfig.create({"cache_dir": str(tmp_path)}, environ={})
    graphs: list[torch.fx.GraphModule] = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm)

    compiled = aot_function(_rms_norm, fw_compiler=keep, bw_compiler=keep, partition_fn=partition_function(config),
                            decompositions=decomposition_table(config))
    x, weight = torch.randn(6, 24, requires_grad=True), torch.randn(24, requires_grad=True)
    compiled(x, weight, torch.tensor(1e-6, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)).sum().backward()
    forward, backward = graphs
    saved = next(iter(forward.graph.find_nodes(op="output"))).args[0][1:]
    assert all(node.op == "placeholder" for node in saved), saved  # eps and scale themselves, not their casts
    for gm, groups_wanted in ((forward, 1), (backward, 3)):
        metas = [node.meta["val"] for node in gm.graph.find_nodes(op="placeholder")]
        plan, refusals, source = _cuda_plan(
            gm, *[(t.shape, "cuda:0" if t.dim() else "cpu", t.dtype) for t in metas], tmp_path=tmp_path)
        groups = [s for s in plan.steps if isinstance(s, FusionGroup)]
        externs = [s for s in plan.steps if isinstance(s, ExternCall)]
        assert len(groups) == groups_wanted and not externs, (plan.describe(), refusals)
        assert "moves data between devices" not in str(refusals)
    body = source[source.index("    def call(args):"):source.index("call._boxed_call")]
    assert body.count(".item()") == 2, body  # the backward reads both scalars by value


def test_which_scalars_are_read_by_value():
    def fn(x, a64, b64, c32, d16, e64):
        return x + a64.to(torch.float32) + (b64 * 2).to(torch.float32) + c32 + d16 + e64.to(torch.float16)

    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(3, 4, device="cuda:0")
        scalars = [torch.empty((), dtype=d) for d in (torch.float64, torch.float64, torch.float32, torch.float16,
                                                       torch.float64)]
        gm = make_fx(fn, tracing_mode="fake")(x, *scalars)
    placeholders = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    by_value = {name for name, node in placeholders.items() if is_host_scalar_input(node)}
    # a64: cast to float32 only; c32, d16: exact in float32. b64 is multiplied in float64, e64
    # cast to half (float64 -> float16 rounds differently from float64 -> float32 -> float16)
    assert by_value == {"a64_1", "c32_1", "d16_1"}, by_value
    casts = [n for n in gm.graph.nodes if n.op == "call_function" and n.args and n.args[0] is placeholders["a64_1"]]
    assert casts and all(is_host_scalar_value(n) for n in casts)
    assert not is_host_scalar_value(placeholders["x_1"])


@needs_cpu_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_scalars_read_by_value_give_eagers_values(dtype, tmp_path):
    """On the CPU (the interpreter) the same by-value path, forward and backward: two float64
    scalars cast to float32 and a 0-d scalar of the inputs' dtype by value; a float64 scalar
    multiplied in float64 (``shift * 3``) by pointer."""
    torch.manual_seed(0)

    def fn(x, w, eps, scale, shift, half_scalar):
        return _rms_norm(x, w, eps, scale) * half_scalar + half_scalar + (shift * 3).to(x.dtype)

    compiled = torch.compile(fn, backend="ait", options={"debug_dir": str(tmp_path)})
    x = torch.randn(7, 24, dtype=dtype, requires_grad=True)
    w = torch.randn(24, dtype=dtype, requires_grad=True)
    scalars = (torch.tensor(1e-6, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64),
               torch.tensor(0.1, dtype=torch.float64), torch.tensor(1.3, dtype=dtype))
    got, want = compiled(x, w, *scalars), fn(x, w, *scalars)
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    exact = fn(x64, w64, *[s.double() for s in scalars])
    assert_close_to_reference(got, want, exact, "output")
    grad = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, [x, w], grad)
    want_grads = torch.autograd.grad(want, [x, w], grad)
    exact_grads = torch.autograd.grad(exact, [x64, w64], grad.double())
    assert_close_to_reference(list(got_grads), list(want_grads), list(exact_grads), "grads")
    for graph in metrics.compiled_graphs:
        assert graph.fallback_reason is None, graph.fallback_reason
    forward = next(tmp_path.glob("graph_*_forward/module.py")).read_text()
    body = forward[forward.index("    def call(args):"):forward.index("call._boxed_call")]
    assert body.count(".item()") == 3, body  # eps, scale, half_scalar; not shift
