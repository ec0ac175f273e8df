"""The Triton GEMM template (``kernels/templates/gemm.py.jinja``) on the CPU through Triton's
interpreter, forced by ``gemm_backends=("triton",)``: mm / addmm / bmm, odd and unit sizes,
transposed operands, every epilogue kind, forward and backward against an fp64 reference; the
GEMM and its epilogue are one kernel; the default choice keeps ATen; a failing template kernel
runs through ATen with one warning."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import faults, metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import runtime
from utils import check_compiled, needs_cpu_triton

TRITON = {"gemm_backends": ("triton",)}
GEMM_OPS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default"}

pytestmark = [needs_cpu_triton, pytest.mark.usefixtures("generated_kernels_must_not_fail")]


def _graphs(kind: str) -> list[metrics.GraphRecord]:
    return [g for g in metrics.compiled_graphs if g.kind == kind]


def _assert_gemms_in_kernels(expected_kernels: int | None = None, kind: str = "forward") -> metrics.GraphRecord:
    """The graph's GEMMs run inside generated kernels (none as ATen externs)."""
    graph = _graphs(kind)[-1]
    assert graph.fallback_reason is None, graph.fallback_reason
    assert not GEMM_OPS & set(graph.externs), graph.externs
    assert GEMM_OPS & set(graph.fused_ops), graph.fused_ops
    if expected_kernels is not None:
        assert len(graph.kernels) == expected_kernels, (graph.kernels, graph.externs)
    return graph


def _randn(*shape: int, dtype: torch.dtype = torch.float32, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).requires_grad_(grad)


@pytest.mark.parametrize("m,n,k", [(13, 7, 5), (1, 9, 1), (33, 17, 40), (2, 1, 3)],
                         ids=["odd", "k1_m1", "multi_tile_k", "n1"])
def test_mm_odd_sizes(m, n, k):
    check_compiled(torch.mm, _randn(m, k), _randn(k, n), options=TRITON)
    _assert_gemms_in_kernels(1)
    _assert_gemms_in_kernels(kind="backward")  # the gradient GEMMs take the template too


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_linear_bias_gelu_one_kernel_saves_preactivation(dtype):
    """addmm + GELU in one kernel; its pre-activation is a second output, saved for backward."""
    model = torch.nn.Sequential(torch.nn.Linear(11, 6), torch.nn.GELU()).to(dtype)
    x = _randn(9, 11, dtype=dtype)
    check_compiled(model, x, options=TRITON)
    forward = _assert_gemms_in_kernels(1)
    assert "aten.gelu.default" in forward.fused_ops
    backward = _assert_gemms_in_kernels(kind="backward")
    assert not GEMM_OPS & set(backward.externs)


@pytest.mark.parametrize("epilogue", ["relu", "residual", "scale", "cast_fp16", "cast_bf16", "sigmoid_mul"])
def test_epilogues(epilogue):
    w, b = _randn(10, 7), _randn(10)
    x, residual = _randn(5, 7), _randn(5, 10)

    def fn(x, w, b, residual):
        y = F.linear(x, w, b)
        if epilogue == "relu":
            return torch.relu(y)
        if epilogue == "residual":
            return y + residual
        if epilogue == "scale":
            return y * 0.125
        if epilogue == "cast_fp16":
            return y.to(torch.float16)
        if epilogue == "cast_bf16":
            return y.to(torch.bfloat16)
        return y * torch.sigmoid(y)  # SiLU written out: the product read twice

    check_compiled(fn, x, w, b, residual, options=TRITON)
    _assert_gemms_in_kernels(1)


def test_bmm_batch_one_and_odd():
    for batch in (1, 3):
        a, b = _randn(batch, 5, 9), _randn(batch, 9, 6)
        check_compiled(lambda a, b: torch.relu(torch.bmm(a, b)) * 2.0, a, b, options=TRITON)
        _assert_gemms_in_kernels(1)


def test_transposed_operands_and_output():
    """Operands read through their strides (column-major A and B), and a transposed product."""
    a = torch.randn(7, 11).t().requires_grad_()   # 11 x 7, column-major
    b = torch.randn(5, 7).t().requires_grad_()    # 7 x 5, column-major
    check_compiled(lambda a, b: (a @ b).t() + 1.0, a, b, options=TRITON)
    _assert_gemms_in_kernels(1)


def test_addmm_beta_alpha_and_row_bias():
    bias = _randn(4, 1)  # broadcast along N
    a, b = _randn(4, 3), _randn(3, 6)
    check_compiled(lambda bias, a, b: torch.addmm(bias, a, b, beta=0.5, alpha=2.0), bias, a, b, options=TRITON)
    _assert_gemms_in_kernels(1)


class _Block(torch.nn.Module):
    """fc2(gelu(fc1(x))) + x on [batch, tokens, features]: each GEMM's product is viewed as
    [batch, tokens, N] before its epilogue."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(8, 12), torch.nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x))) + x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_three_dim_block_fuses_through_the_row_reshape(dtype):
    """The view [M, N] -> [batch, tokens, N] splits the tile's rows: forward = two kernels (fc1 +
    bias + GELU with the pre-activation saved, fc2 + bias + residual), every GEMM of the
    backward on the template."""
    x = _randn(2, 3, 8, dtype=dtype)
    check_compiled(_Block().to(dtype), x, options=TRITON)
    forward = _assert_gemms_in_kernels(2)
    assert {"aten.gelu.default", "aten.add.Tensor", "aten.view.default"} <= set(forward.fused_ops)
    assert forward.externs.count("aten.view.default") <= 1  # the input's flattening, nothing after a GEMM
    _assert_gemms_in_kernels(kind="backward")


def test_a_reshape_that_is_not_a_row_split_stays_outside():
    """[M, N] -> [N, M]-shaped view (not a split of the rows): refused with a reason, and right."""
    a, b = _randn(4, 6), _randn(6, 3)
    check_compiled(lambda a, b: torch.relu((a @ b).reshape(3, 4)), a, b, options=TRITON)
    forward = _graphs("forward")[-1]
    assert any("not a reshape of its rows" in r for r in forward.refused.values()), forward.refused


def test_generated_source_has_one_dot_and_the_epilogue():
    from ait_dynamo.compile import compile_graph
    from torch.fx.experimental.proxy_tensor import make_fx

    x, w, b = torch.randn(6, 4), torch.randn(4, 5), torch.randn(5)
    gm = make_fx(lambda x, w, b: torch.relu(torch.addmm(b, x, w)))(x, w, b)
    config = AitConfig.create({**TRITON, "cache_dir": "/tmp/ait_gemm_test_cache"}, environ={})
    metrics.reset()
    compiled = compile_graph(gm, [x, w, b], config)
    torch.testing.assert_close(compiled([x, w, b]), torch.relu(torch.addmm(b, x, w)))
    graph = metrics.compiled_graphs[-1]
    assert graph.externs == [] and len(graph.kernels) == 1
    assert graph.fused_ops == ["aten.addmm.default", "aten.relu.default"]


@pytest.mark.parametrize("dtype, k, blocked", [(torch.float32, 300, True), (torch.float32, 64, False),
                                               (torch.float16, 300, False)], ids=str)
def test_long_float32_sums_add_each_k_slice_apart(dtype, k, blocked, tmp_path):
    """float32 with K > BLOCKED_SUM_MIN_K sums each K slice apart with Kahan's compensation (the
    chain's rounding grows with K); shorter or 16-bit GEMMs chain the dot into the accumulator."""
    a, b = torch.randn(33, k, dtype=dtype), torch.randn(k, 17, dtype=dtype)
    compiled = torch.compile(lambda a, b: a @ b, backend="ait", options={**TRITON, "debug_dir": str(tmp_path)})
    torch._dynamo.reset()
    torch.testing.assert_close(compiled(a, b).double(), a.double() @ b.double(),
                               rtol=1e-5 if dtype == torch.float32 else 2e-3, atol=1e-4 if dtype == torch.float32 else 2e-2)
    source = next(tmp_path.glob("*/module.py")).read_text()
    assert ("part = tl.dot(a_tile, b_tile" in source and "lost = (total - acc) - part" in source) is blocked and ("tl.dot(a_tile, b_tile, acc" in source) is not blocked


def test_default_backends_keep_aten_without_a_measurement():
    """Default ("aten", "triton") on the CPU: no measurement, so cuBLAS/ATen as before, with
    the reason in the refusals; ("aten",) likewise."""
    for options in ({}, {"gemm_backends": ("aten",)}):
        x, w = _randn(5, 4), _randn(6, 4)
        check_compiled(lambda x, w: torch.relu(F.linear(x, w)), x, w, options=options)
        forward = _graphs("forward")[-1]
        assert "aten.mm.default" in forward.externs
        reasons = [r for r in forward.refused.values() if "GEMM runs through ATen" in r]
        assert reasons, forward.refused


def test_a_failing_template_runs_through_aten_with_one_warning():
    x, w = _randn(5, 4), _randn(6, 4)
    with faults.inject("compile", kernel="kernel_0", graph="forward"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_compiled(lambda x, w: torch.relu(F.linear(x, w)), x, w, options=TRITON)
    messages = [str(w.message) for w in caught if "ait_dynamo" in str(w.message)]
    assert len(messages) == 1 and "injected compile failure" in messages[0], messages
    assert len(runtime.BROKEN) == 1
    runtime.BROKEN.clear()


def test_gemm_options_are_validated():
    assert AitConfig.create({"gemm_backends": "triton,aten"}, environ={}).gemm_backends == ("aten", "triton")
    assert AitConfig.create(environ={"AIT_GEMM_BACKENDS": "triton"}).gemm_backends == ("triton",)
    assert AitConfig.create({}, environ={}).gemm_backends == ("aten", "triton")
    for bad in ((), ("cublas",), 3, ("triton", 1)):
        with pytest.raises(ValueError, match="gemm_backends"):
            AitConfig.create({"gemm_backends": bad}, environ={})
    assert AitConfig.create({"gemm_backends": "cutlass, aten"}, environ={}).gemm_backends == ("aten", "cutlass")
    assert AitConfig.create({"gemm_backends": "aten:triton:cutlass"}, environ={}).gemm_backends == (
        "aten", "triton", "cutlass")
    assert AitConfig.create({"autotune_budget_s": "2.5"}, environ={}).autotune_budget_s == 2.5
    for bad in (-1, "soon", True, float("nan")):
        with pytest.raises(ValueError, match="autotune_budget_s"):
            AitConfig.create({"autotune_budget_s": bad}, environ={})
    a = AitConfig.create({}, environ={})
    assert a.cache_token() != a.replace(gemm_backends=("triton",)).cache_token()


def test_padding_is_skipped_when_only_the_template_runs():
    """GEMM padding serves cuBLAS: under ("triton",) even pad_gemms="always" leaves the graph as
    it is (the template masks ragged K and N), and the product is one kernel."""
    x, w = _randn(5, 7), _randn(3, 7)  # K = 7, N = 3: unaligned
    check_compiled(lambda x, w: F.linear(x, w) * 2.0, x, w, options={**TRITON, "pad_gemms": "always"})
    forward = _assert_gemms_in_kernels(1)
    assert "aten.constant_pad_nd.default" not in forward.externs + forward.fused_ops


def _two_gemm_graph():
    from torch.fx.experimental.proxy_tensor import make_fx

    x, w1, w2 = torch.randn(6, 5), torch.randn(5, 7), torch.randn(7, 3)
    gm = make_fx(lambda x, w1, w2: torch.relu(x @ w1) @ w2 * 2.0)(x, w1, w2)
    return gm, (x, w1, w2)


def test_measured_choice_is_kept_on_disk_and_replans(tmp_path):
    """Both backends allowed: each GEMM group of a trial plan is timed (template with its
    epilogue vs ATen + the epilogue's copy), the faster wins, the decision is stored per device
    and template source, and a later compile reads it instead of measuring."""
    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.fusion import build_plan

    gm, _ = _two_gemm_graph()
    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True}, environ={})
    timings = iter([1.0, 2.0,    # first GEMM (+ relu): template 1.0 ms, ATen 2.0 ms -> template
                    3.0, 2.5])   # second GEMM (* 2.0): template 3.0 ms, ATen 2.5 ms -> ATen
    timed: list[str] = []

    def bench(fn):
        fn()  # both sides really run (the template through the interpreter)
        timed.append("run")
        return next(timings)

    def plan_with(measured):
        return build_plan(gm, config, measured)

    gemm_tuning._decisions.clear()
    decisions = gemm_tuning.choose_gemm_backends(gm, config, plan_with, bench=bench, device_name="test-device")
    mm_names = [n.name for n in gm.graph.nodes if n.target is torch.ops.aten.mm.default]
    assert decisions == {mm_names[0]: True, mm_names[1]: False}
    assert len(timed) == 4
    plan, refusals = build_plan(gm, config, decisions)
    kinds = [getattr(s, "kind", "extern") for s in plan.steps]
    assert kinds.count("gemm") == 1 and "cuBLAS faster" in refusals[mm_names[1]]
    stored = (tmp_path / "gemm_choice" / "test_device.json").read_text()
    assert stored.count('"template": true') == 1 and stored.count('"template": false') == 1
    gemm_tuning._decisions.clear()  # a new process: the decisions come back from disk, unmeasured
    again = gemm_tuning.choose_gemm_backends(gm, config, plan_with, bench=bench, device_name="test-device")
    assert again == decisions and len(timed) == 4


def test_measurement_inside_dynamos_fake_mode_uses_real_tensors(tmp_path):
    """Under torch.compile the compiler runs inside Dynamo's FakeTensorMode: the measurement must
    still time real tensors (on the H200 it raised "Cannot access data pointer of Tensor" for
    every GEMM and stored no decision)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.fusion import build_plan

    gm, _ = _two_gemm_graph()
    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True}, environ={})
    timings = iter([1.0, 2.0, 3.0, 2.5])

    def bench(fn):
        fn()
        return next(timings)

    gemm_tuning._decisions.clear()
    with FakeTensorMode():
        decisions = gemm_tuning.choose_gemm_backends(gm, config, lambda m: build_plan(gm, config, m), bench=bench,
                                                     device_name="test-device")
    assert sorted(decisions.values()) == [False, True], decisions
    assert (tmp_path / "gemm_choice" / "test_device.json").exists()


def test_tuning_budget_leaves_aten(tmp_path):
    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.fusion import build_plan

    gm, _ = _two_gemm_graph()
    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True, "autotune_budget_s": 0}, environ={})
    gemm_tuning._decisions.clear()

    def bench(fn):
        raise AssertionError("nothing may be measured once the budget is spent")

    decisions = gemm_tuning.choose_gemm_backends(gm, config, lambda m: build_plan(gm, config, m), bench=bench,
                                                 device_name="test-device")
    assert decisions == {}
    plan, _ = build_plan(gm, config, decisions)
    assert not [s for s in plan.steps if getattr(s, "kind", None) == "gemm"]


def test_candidate_configs_compile_in_parallel_before_timing(tmp_path):
    """Cold autotuning: every candidate is compiled (JITFunction.warmup, in threads) before the
    first is timed, and only when there is something to measure."""
    from ait_dynamo.kernels import autotune, gemm_configs

    class Kernel:
        def __init__(self):
            self.warmed: list[tuple] = []

        def warmup(self, *args, grid, num_warps, num_stages, **constexprs):
            self.warmed.append((constexprs["BLOCK_M"], constexprs["BLOCK_N"], constexprs["BLOCK_K"],
                                constexprs["GROUP_M"], num_warps, num_stages))

    kernel = Kernel()
    configs = gemm_configs.candidates(1, 8192, 8192, 8192, torch.bfloat16)
    assert len(configs) > 4 and all(gemm_configs.fits(c, torch.bfloat16) for c in configs)
    order: list[str] = []
    autotune.set_directory(str(tmp_path))
    autotune._memory.clear()

    def prepare(candidates):
        runtime.warm_gemm_configs(kernel, (torch.zeros(1),), candidates, 8192, False)
        order.append("prepared")

    def bench(fn):
        order.append("timed")
        return 1.0

    choice = autotune.choose("gemmkey", (1, 8192, 8192, 8192), configs, lambda c: None, device="dev",
                             bench=bench, prepare=prepare)
    assert sorted(kernel.warmed) == sorted(configs) and order[0] == "prepared" and choice in configs
    autotune._memory.clear()
    order.clear()
    autotune.choose("gemmkey", (1, 8192, 8192, 8192), configs, lambda c: None, device="dev", bench=bench,
                    prepare=prepare)
    assert order == []  # the stored choice: nothing compiled or timed again


@pytest.mark.parametrize("prologue", ["cast_bf16", "cast_fp16", "scale", "transposed_cast"])
def test_prologues_load_through_the_template(prologue):
    """Inference (nothing saves the operands): a cast or scale in front of the GEMM is computed
    on the operand tiles as they are loaded; ragged K (7) exercises the masked columns."""
    x, w, b = torch.randn(13, 7), torch.randn(5, 7), torch.randn(5)

    def fn(x, w, b):
        if prologue == "cast_bf16":
            return torch.relu(F.linear(x.to(torch.bfloat16), w.to(torch.bfloat16))) + b.to(torch.bfloat16)
        if prologue == "cast_fp16":
            return torch.mm(x.to(torch.float16), w.t().to(torch.float16)) * 2.0
        if prologue == "scale":
            return (x * 0.5) @ (w / 4.0).t() + b
        return torch.mm(x.to(torch.float16), w.to(torch.float16).t())

    check_compiled(fn, x, w, b, backward=False, options=TRITON)
    graph = metrics.compiled_graphs[-1]
    assert graph.fallback_reason is None and not GEMM_OPS & set(graph.externs) and not graph.externs
    # one kernel: the GEMM with its operands' casts / scales (cast_bf16: the bias's cast is an
    # epilogue input, computed by a kernel of its own)
    assert len(graph.kernels) == (2 if prologue == "cast_bf16" else 1), (graph.kernels, graph.fused_ops)


def test_an_operand_read_elsewhere_is_not_a_prologue():
    """The cast operand is also returned: it must exist in memory, so it stays its own kernel."""
    x, w = torch.randn(6, 4), torch.randn(4, 3)

    def fn(x, w):
        xh = x.to(torch.float16)
        return xh @ w.to(torch.float16), xh

    check_compiled(fn, x, w, backward=False, options=TRITON)
    graph = metrics.compiled_graphs[-1]
    assert graph.fallback_reason is None and len(graph.kernels) == 2, graph.kernels


def test_symbolic_sizes_keep_aten():
    """The template specialises on sizes and strides: under dynamic shapes the GEMM stays ATen
    (with its reason) and the epilogue is an ordinary kernel; results stay right."""
    x, w = _randn(6, 4), _randn(5, 4)
    check_compiled(lambda x, w: torch.relu(F.linear(x, w)), x, w, dynamic=True, options=TRITON)
    forward = _graphs("forward")[-1]
    assert "aten.mm.default" in forward.externs
    assert any("symbolic sizes" in r for r in forward.refused.values()), forward.refused


def test_the_aten_side_is_charged_the_bytes_of_separate_kernels():
    """cuBLAS + separate kernels: the epilogue reads the product and its other inputs and writes
    its outputs (not the product again); a prologue reads its source and writes the operand."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.fusion import build_plan

    x, w, r = torch.randn(6, 4), torch.randn(5, 4), torch.randn(6, 5)
    gm = make_fx(lambda x, w, r: (torch.mm(x.to(torch.float16), w.t().to(torch.float16)) + r.half(),))(x, w, r)
    config = AitConfig.create(TRITON, environ={})
    plan, _ = build_plan(gm, config)
    (group,) = [s for s in plan.steps if getattr(s, "kind", None) == "gemm"]
    half, single = 2, 4
    # epilogue: product read (6x5 fp16), r.half() read (6x5 fp16: its own kernel), sum written
    assert gemm_tuning._epilogue_bytes(group) == 3 * 30 * half
    # prologues: x and w read in fp32, their fp16 casts written
    assert gemm_tuning._prologue_bytes(group) == (24 + 20) * (single + half)


@pytest.mark.parametrize("returns_sum, units", [(True, 2), (False, 1)], ids=["sum-returned", "sum-internal"])
def test_an_epilogue_that_joins_the_next_layer_norm_is_charged_what_fusing_saves(returns_sum, units):
    """``mm + r`` before a LayerNorm (ViT's fc2 + residual): with cuBLAS, the add joins the
    LayerNorm's kernel, which reads the product and r and writes the sum where it is returned; with
    the epilogue fused, that kernel reads the sum instead. ATen's side is charged that difference
    (2 tensors, 1 when the sum is not returned), not a separate kernel's 3 (the H200 chose fused
    kernels that were slower in ViT-B and ViT-L). An epilogue that is a kernel of its own (relu) is
    still charged the product read and the result written."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.kernels.epilogue_cost import AtenPlanBytes
    from ait_dynamo.passes.decompositions import decomposition_table
    from ait_dynamo.passes.fusion import build_plan

    config = AitConfig.create({"autotune": True}, environ={})
    x, w, r = torch.randn(6, 4), torch.randn(4, 5), torch.randn(6, 5)
    tensor = 6 * 5 * 4

    def charged(fn):
        gm = make_fx(fn, decomposition_table=decomposition_table(config))(x, w, r)
        mms = [n.name for n in gm.graph.nodes if n.target is torch.ops.aten.mm.default]
        trial, _ = build_plan(gm, config, {name: True for name in mms})
        (group,) = [s for s in trial.steps if getattr(s, "kind", None) == "gemm"]
        aten_plan, _ = build_plan(gm, config, {name: False for name in mms})
        return gemm_tuning.aten_side_bytes(group, AtenPlanBytes(aten_plan)), gemm_tuning.aten_side_bytes(group, None)

    def residual_then_norm(x, w, r):
        s = x @ w + r
        return (s, F.layer_norm(s, (5,))) if returns_sum else (F.layer_norm(s, (5,)),)

    planned, separate = charged(residual_then_norm)
    assert (planned, separate) == (units * tensor, 3 * tensor)
    assert charged(lambda x, w, r: (torch.relu(x @ w),)) == (2 * tensor, 2 * tensor)


def test_the_decision_is_kept_with_the_bytes_charged_to_aten(tmp_path):
    """The stored decision names what ATen's side was charged: a decision made under another
    charge (an older measure) is made again."""
    import json

    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.fusion import build_plan

    gm, _ = _two_gemm_graph()
    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True}, environ={})
    gemm_tuning._decisions.clear()
    gemm_tuning.choose_gemm_backends(gm, config, lambda m: build_plan(gm, config, m), bench=lambda fn: (fn(), 1.0)[1],
                                     device_name="test-device")
    stored = json.loads((tmp_path / "gemm_choice" / "test_device.json").read_text())
    # relu(x @ w1) is a kernel of its own under cuBLAS: product read, result written (6x7 fp32)
    assert sorted(v["aten_bytes"] for v in stored.values()) == sorted([2 * 6 * 7 * 4, 2 * 6 * 3 * 4])
    assert all(key.endswith(f"|aten_bytes={v['aten_bytes']}") for key, v in stored.items())


def test_dropout_in_the_epilogue_with_philox():
    """fallback_random=False: dropout after the GEMM is drawn inside the template's epilogue
    (Philox offset = the element's flat index); kept elements are the product scaled by 2."""
    x, w = torch.randn(13, 7), torch.randn(5, 7)
    compiled = torch.compile(lambda x, w: F.dropout(F.linear(x, w), 0.5, training=True), backend="ait",
                             options={**TRITON, "fallback_random": False})
    torch._dynamo.reset()
    y = compiled(x, w)
    kept = y != 0
    assert 0.2 < kept.float().mean().item() < 0.8
    torch.testing.assert_close(y[kept], 2 * (x @ w.t())[kept])
    graph = metrics.compiled_graphs[-1]
    assert graph.kernels == ["kernel_0"] and not graph.externs


def test_the_numerics_guard_catches_a_wrong_template_kernel():
    """verify=True: a template kernel that stores a wrong product (fault wrong_result, in the
    pre-activation's store as well) is found on the first call and retired; results are right."""
    x, w = _randn(6, 4), _randn(5, 4)
    with faults.inject("wrong_result", kernel="kernel_0", graph="forward"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_compiled(lambda x, w: torch.relu(F.linear(x, w)), x, w, options={**TRITON, "verify": True})
    forward = _graphs("forward")[-1]
    assert "kernel_0" in forward.verify_failures, forward.verify_failures
    assert any("kernel_0" in str(w.message) for w in caught)
    runtime.BROKEN.clear()  # retired by the guard, as intended


def test_a_template_that_computes_a_wrong_value_is_never_chosen(tmp_path):
    """The measurement has the template's outputs and the ATen ops at hand: a template that is
    wrong on the device (here an injected wrong store) keeps cuBLAS, however fast it is, with one
    warning that names the GEMM."""
    import warnings

    from ait_dynamo import faults
    from ait_dynamo.kernels import gemm_tuning
    from ait_dynamo.passes.fusion import build_plan

    gm, _ = _two_gemm_graph()
    config = AitConfig.create({"cache_dir": str(tmp_path), "autotune": True}, environ={})
    gemm_tuning._decisions.clear()

    def bench(fn):
        fn()
        return 1.0  # as fast as ATen: only correctness can tell them apart

    with faults.inject("wrong_result"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decisions = gemm_tuning.choose_gemm_backends(gm, config, lambda m: build_plan(gm, config, m), bench=bench,
                                                     device_name="test-device")
    assert decisions and not any(decisions.values()), decisions
    messages = [str(w.message) for w in caught if "GEMM template" in str(w.message)]
    assert len(messages) == len(decisions) and "differs from ATen" in messages[0], messages
    gemm_tuning._decisions.clear()
    right = gemm_tuning.choose_gemm_backends(gm, config.replace(cache_dir=str(tmp_path / "again")),
                                             lambda m: build_plan(gm, config, m), bench=lambda fn: (fn(), 1.0)[1],
                                             device_name="test-device")
    assert right == {name: False for name in decisions}  # ties keep cuBLAS; no warning needed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_a_layer_norms_upcast_after_the_gemm_joins_the_layer_norm(monkeypatch, dtype):
    """``nn.Linear`` then ``nn.LayerNorm`` in 16 bits: the template writes its 16-bit product and
    the LayerNorm's kernel casts it as it loads, rather than the template writing a float32 copy
    for the LayerNorm to read back (``passes/fusion.py``, ``widens_for_a_reduction``)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.kernels import gemm_choice
    from ait_dynamo.passes.decompositions import decomposition_table
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes
    from ait_dynamo.passes.plan import FusionGroup

    monkeypatch.setattr(gemm_choice, "triton_runs_on", lambda device: True)
    config = AitConfig.create(TRITON, environ={})
    args = [torch.randn(*s, dtype=dtype) for s in ((2, 5, 24), (40, 24), (40,), (40,), (40,))]
    gm = make_fx(lambda x, w, b, g, beta: (F.layer_norm(F.linear(x, w, b), (40,), g, beta),),
                 decomposition_table=decomposition_table(config))(*args)
    plan, _ = build_plan(run_passes(gm, config), config)
    groups = [s for s in plan.steps if isinstance(s, FusionGroup)]
    casts = (torch.ops.aten._to_copy.default, torch.ops.prims.convert_element_type.default)
    gemms = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)
    (template,) = [g for g in groups if any(n.target in gemms for n in g.nodes)]
    assert not any(n.target in casts for n in template.nodes), [n.name for n in template.nodes]
    assert all(o.meta["val"].dtype == dtype for o in template.outputs)
    (norm,) = [g for g in groups if g.reduced]
    assert any(n.target in casts and n.meta["val"].dtype == torch.float32 for n in norm.nodes)
    assert len(groups) == 2
