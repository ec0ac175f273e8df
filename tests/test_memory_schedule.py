"""Memory-aware scheduling of the generated wrapper: horizontal fusion only between neighbouring
groups, shrinking steps (column sums) hoisted to just after their producers, in-place reuse of
dying buffers, and split column reductions with a cast epilogue. Each is checked for its
structure (what the plan or the generated source does) and for exact results against eager."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.compile import compile_graph
from ait_dynamo.config import AitConfig
from ait_dynamo.kernels.runtime import triton_runs_on
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.plan import FusionGroup
from utils import check_compiled

pytestmark = pytest.mark.usefixtures("generated_kernels_must_not_fail")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")
REUSE = re.compile(r"^\s+(\w+) = ([a-z_]\w*)$", re.MULTILINE)  # "out = dying_input" in the wrapper


def _plan(fn, *inputs):
    gm = make_fx(fn)(*inputs)
    plan, _ = build_plan(gm, AitConfig.create({}, environ={}))
    return plan


def _compiled_source(fn, inputs, tmp_path) -> tuple[str, list]:
    gm = make_fx(fn)(*inputs)
    config = AitConfig.create({"debug_dir": str(tmp_path), "cache_dir": str(tmp_path / "cache")}, environ={})
    compiled = compile_graph(gm, list(inputs), config)
    outputs = compiled(list(inputs))
    return (tmp_path / metrics.compiled_graphs[-1].name / "module.py").read_text(), outputs


def test_no_horizontal_fusion_across_an_aten_call():
    """Merging groups that an mm separates would compute the later one early and keep its
    result alive across the mm (ViT-B's backward held twelve GELU recomputations that way)."""
    x, y, w = torch.randn(8, 8), torch.randn(8, 8), torch.randn(8, 8)

    def separated(x, y, w):
        a = x.sin() * 2
        m = a @ w
        return m, y.cos() + 1

    def adjacent(x, y, w):
        return (x.sin() * 2) @ w, y.cos() + 1, x.exp()

    groups = [s for s in _plan(separated, x, y, w).steps if isinstance(s, FusionGroup)]
    assert len(groups) == 2
    groups = [s for s in _plan(adjacent, x, y, w).steps if isinstance(s, FusionGroup)]
    # x.sin()*2 and x.exp() are neighbours (nothing runs between them) and merge; y.cos() comes
    # after the mm
    assert len(groups) == 2 and sorted(len(g.outputs) for g in groups) == [1, 2]


def test_column_sum_runs_right_after_its_producer():
    """The bias-gradient-like sum is hoisted above the unrelated mm's, so its input dies early."""

    def fn(x, w):
        y = (x * 3).exp()
        m = (y @ w) @ w
        return m, y.sum(0)

    x, w = torch.randn(64, 16), torch.randn(16, 16)
    steps = _plan(fn, x, w).steps
    kinds = [("sum" if isinstance(s, FusionGroup) and s.reduced else "kernel") if isinstance(s, FusionGroup)
             else str(s.node.target) for s in steps]
    first_mm = kinds.index("aten.mm.default")
    assert kinds.index("sum") < first_mm + 1, kinds
    mms = [i for i, k in enumerate(kinds) if k == "aten.mm.default"]
    assert kinds.index("sum") < mms[-1], kinds


def _kinds(steps) -> list[str]:
    return [("sum" if s.reduced else "kernel") if isinstance(s, FusionGroup) else str(s.node.target) for s in steps]


def test_a_shrinking_step_passes_a_write_it_cannot_observe_but_not_one_it_reads():
    """``add_`` into the buffer ``b`` (a batch norm's running statistics) is a barrier: the sum of
    ``y``, which does not read ``b``, still runs before it, right after its producer; a sum that
    reads ``b`` stays after the write."""

    def fn(x, w, b):
        y = x @ w  # an ATen result: the sum is a step of its own
        m = (y @ w) @ w
        b.add_(1.0)
        return m, y.sum(0)

    def reads_the_buffer(x, w, b):
        y = x @ w
        m = (y @ w) @ w
        b.add_(1.0)
        return m, (y * b).sum(0)

    x, w, b = torch.randn(64, 16), torch.randn(16, 16), torch.randn(16)
    kinds = _kinds(_plan(fn, x, w, b).steps)
    assert kinds.index("sum") == 1 and kinds.index("aten.add_.Tensor") > 1, kinds  # right after y's mm
    kinds = _kinds(_plan(reads_the_buffer, x, w, b.clone()).steps)
    assert kinds.index("sum") > kinds.index("aten.add_.Tensor"), kinds


def test_a_constant_read_by_a_shrinking_step_does_not_hold_it_back():
    """A constant (``get_attr``) is there from the start: the sum that reads one still runs right
    after its producer (the max pool's window offsets read two folded aranges)."""
    weights = torch.arange(16.0)

    def fn(x, w):
        y = x @ w
        m = (y @ w) @ w
        return m, (y * weights).sum(0)

    steps = _plan(fn, torch.randn(64, 16), torch.randn(16, 16)).steps
    kinds = _kinds(steps)
    assert any(not isinstance(s, FusionGroup) and s.node.op == "get_attr" for s in steps), kinds
    assert kinds.index("sum") < kinds.index("aten.mm.default", 1) + 1, kinds


def _weight_gradient_first(g, a, x, w):
    grad_w = (g.t() @ a).float()  # small inputs, a large result only the output reads
    big = (x @ w).exp()  # the peak comes after
    return grad_w, (big @ w).sum()


def _weight_gradient_inputs():
    return (torch.randn(8, 64, dtype=torch.bfloat16), torch.randn(8, 64, dtype=torch.bfloat16),
            torch.randn(256, 64), torch.randn(64, 64))


def test_a_growing_result_only_the_output_reads_runs_after_the_peak(monkeypatch):
    """Like the classifier's weight gradient in ResNet-50's backward: graph order makes it first
    and holds it through the peak. Moved to the end, the modeled peak is lower by its size."""
    from ait_dynamo.passes import fusion
    from ait_dynamo.passes.plan_memory import live_bytes

    inputs = _weight_gradient_inputs()
    plan = _plan(_weight_gradient_first, *inputs)
    kinds = _kinds(plan.steps)
    mms = [i for i, k in enumerate(kinds) if k == "aten.mm.default"]
    gradient_mm = next(i for i in mms if plan.steps[i].node.meta["val"].dtype == torch.bfloat16)
    assert gradient_mm > max(i for i in mms if i != gradient_mm), kinds  # after both float32 products
    monkeypatch.setattr(fusion, "sink_growing_steps", lambda plan: None)
    unsunk = _plan(_weight_gradient_first, *inputs)
    assert max(live_bytes(unsunk)) - max(live_bytes(plan)) >= 64 * 64 * 4 - 64 * 64 * 2  # float32 out, bf16 kept


def test_a_growing_step_stays_where_moving_it_lowers_no_peak():
    """The result is read by the next step, or the step frees more than it makes: order kept."""

    def read_next(x, w):
        y = x @ w
        return (y @ w).sum(), (y * 2).sum()

    def frees_more(x, w):
        y = (x * 3).exp()  # 64 x 64 dies at the mm that makes 64 x 8
        small = y @ w
        big = (x @ x.t()).exp()
        return small, big.sum()

    for fn, inputs in ((read_next, (torch.randn(32, 32), torch.randn(32, 32))),
                       (frees_more, (torch.randn(64, 64), torch.randn(64, 8)))):
        gm = make_fx(fn)(*inputs)
        order = [n.name for n in gm.graph.nodes if n.op == "call_function" and "mm" in str(n.target)]
        steps = _plan(fn, *inputs).steps
        planned = [s.name for s in steps if not isinstance(s, FusionGroup) and "mm" in str(s.node.target)]
        assert planned == order, (planned, order)


@needs_triton
def test_sunk_weight_gradient_matches_eager():
    check_compiled(_weight_gradient_first, *_weight_gradient_inputs(), backward=False)


@needs_triton
def test_elementwise_output_takes_over_a_dying_buffer(tmp_path):
    x, w = torch.randn(37, 19, device=DEVICE), torch.randn(19, 23, device=DEVICE)
    source, outputs = _compiled_source(lambda x, w: ((x @ w).relu() * 2,), (x, w), tmp_path)
    torch.testing.assert_close(outputs[0], (x @ w).relu() * 2)
    assert ("mul", "mm") in REUSE.findall(source), source


@needs_triton
def test_no_reuse_of_a_buffer_read_later(tmp_path):
    def fn(x, w):
        m = x @ w
        return m.relu() * 2, m @ w.t()

    x, w = torch.randn(16, 12, device=DEVICE), torch.randn(12, 12, device=DEVICE)
    source, outputs = _compiled_source(fn, (x, w), tmp_path)
    assert not any(b.startswith("mm") for _, b in REUSE.findall(source)), source
    for got, want in zip(outputs, fn(x, w)):
        torch.testing.assert_close(got, want)


@needs_triton
def test_no_reuse_of_a_graph_input(tmp_path):
    def fn(x):
        return (x.exp() + 1,)

    x = torch.randn(64, device=DEVICE)
    source, outputs = _compiled_source(fn, (x.clone(),), tmp_path)
    assert not REUSE.findall(source.split("def call(args):")[1].split("args.clear()")[1]), source
    torch.testing.assert_close(outputs[0], x.exp() + 1)


@needs_triton
def test_training_with_reuse_and_hoisting_matches_eager():
    """An MLP block with ReLU and layer_norm: in-place ReLU gradient, hoisted weight sums."""
    torch.manual_seed(0)
    ln = torch.nn.LayerNorm(24).to(DEVICE)
    fc1, fc2 = torch.nn.Linear(24, 40).to(DEVICE), torch.nn.Linear(40, 24).to(DEVICE)

    def block(x, w1, b1, w2, b2, g, b):
        h = F.layer_norm(x, (24,), g, b)
        return x + F.linear(F.linear(h, w1, b1).relu(), w2, b2)

    params = [fc1.weight, fc1.bias, fc2.weight, fc2.bias, ln.weight, ln.bias]
    x = torch.randn(3, 7, 24, device=DEVICE, requires_grad=True)
    check_compiled(block, x, *[p.detach().clone().requires_grad_() for p in params])


def _finishing_kernels(source: str) -> list[str]:
    """The kernels that combine split reductions' partial results (``kernels/split_sum.py``) in a
    generated module, each launched from a site of its own; no ATen sum does it instead."""
    assert ".sum(0)" not in source, source
    kernels = [k for k in source.split("@triton.jit") if "partial results, combined" in k]
    for kernel in kernels:
        name = re.search(r"def (\w+)\(", kernel).group(1)
        assert f"LaunchSite({name}, " in source, source
    return kernels


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_layer_norm_weight_gradient_is_a_split_column_sum(dtype, tmp_path):
    """Few long columns: the rows are split over programs even though the sums are cast to the
    parameter dtype afterwards (unsplit, a 32768x768 fp16 weight gradient took 912 us on an H200);
    one second kernel adds up both gradients' partial sums and rounds them once."""
    x = torch.randn(1031, 40, device=DEVICE, dtype=dtype, requires_grad=True)  # rows for 4 splits on a GPU
    w = torch.randn(40, device=DEVICE, dtype=dtype, requires_grad=True)
    b = torch.randn(40, device=DEVICE, dtype=dtype, requires_grad=True)
    metrics.reset()
    check_compiled(lambda x, w, b: F.layer_norm(x, (40,), w, b), x, w, b,
                   options={"debug_dir": str(tmp_path)})
    backward = [g for g in metrics.compiled_graphs if g.name.endswith("backward")][-1]
    source = (tmp_path / backward.name / "module.py").read_text()
    (finishing,) = _finishing_kernels(source)
    assert finishing.count("tl.store(") == 2, finishing  # the weight and bias gradients, one kernel
    if dtype != torch.float32:
        assert ("tmath.to_bf16(" if dtype == torch.bfloat16 else ".to(tl.float16)") in finishing, finishing


@needs_triton
def test_bias_gradient_through_a_view_is_a_split_column_sum(tmp_path):
    """A linear layer on 3-d activations sums its bias gradient over two dims and views the
    result: still a split column sum (unsplit, ViT-B/16's bias sums took 4-6x their floor)."""
    x = torch.randn(5, 131, 24, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)  # 2 splits on a GPU
    w = torch.randn(40, 24, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(40, device=DEVICE, dtype=torch.bfloat16, requires_grad=True)
    metrics.reset()
    check_compiled(lambda x, w, b: F.linear(x, w, b) * 2, x, w, b, options={"debug_dir": str(tmp_path)})
    backward = [g for g in metrics.compiled_graphs if g.name.endswith("backward")][-1]
    source = (tmp_path / backward.name / "module.py").read_text()
    assert len(_finishing_kernels(source)) == 1, source


@needs_triton
def test_split_sums_of_one_shape_share_their_partial_buffer(tmp_path):
    """Three stacked linear layers of one width: their bias gradients are split column sums of one
    shape, in three groups (a GEMM between each). The partial sums of a group are dead once its
    finishing kernel ran, so the later groups write theirs into the first one's buffer: one
    allocation where there were three (host time: 98 of them a step in GPT-2's backward)."""
    x = torch.randn(5, 131, 24, device=DEVICE, requires_grad=True)  # 2 splits on a GPU (as above)
    layers = [(torch.randn(24, 24, device=DEVICE, requires_grad=True), torch.randn(24, device=DEVICE, requires_grad=True))
              for _ in range(3)]

    def fn(x, w0, b0, w1, b1, w2, b2):
        for w, b in ((w0, b0), (w1, b1), (w2, b2)):
            x = torch.tanh(F.linear(x, w, b))
        return x

    metrics.reset()
    check_compiled(fn, x, *[t for layer in layers for t in layer], options={"debug_dir": str(tmp_path)})
    backward = [g for g in metrics.compiled_graphs if g.name.endswith("backward")][-1]
    call = (tmp_path / backward.name / "module.py").read_text().split("def call(args):")[1].split("call._boxed_call")[0]
    allocated = re.findall(r"(\w+__partial) = (?:torch\.empty_strided|_alloc)\(", call)
    shared = re.findall(r"(\w+__partial) = (\w+__partial)\n", call)
    assert call.count("_sum_site.launch(") == 3, call  # three split sums, each finished
    assert len(allocated) == 1 and len(shared) == 2 and {b for _, b in shared} == set(allocated), call


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_squeeze_excitation_pooling_stores_its_activation_in_the_pass_that_sums_it(dtype, tmp_path):
    """Squeeze-excitation's pooling over channels-last rows: the activation is returned and
    averaged per (image, channel). One kernel, one pass over each row (the activation stored
    where it is summed), the rows split over programs with float32 partial sums that are rounded
    once. Unsplit and read twice, EfficientNet-B0's first SE pooling took 528 us on the H200 for
    a 51 MB floor of ~13 us (profile of 9afe921)."""

    def fn(x, s, b):
        y = F.silu(x * s + b)
        return y, y.mean((2, 3), keepdim=True)

    x = torch.randn(2, 6, 40, 30, device=DEVICE, dtype=dtype).to(memory_format=torch.channels_last)
    s = torch.randn(1, 6, 1, 1, device=DEVICE, dtype=dtype)
    b = torch.randn(1, 6, 1, 1, device=DEVICE, dtype=dtype)
    metrics.reset()
    check_compiled(fn, x.requires_grad_(), s.requires_grad_(), b.requires_grad_(),
                   options={"debug_dir": str(tmp_path)}, check_strides=True)
    forward = [g for g in metrics.compiled_graphs if g.name.endswith("forward")][-1]
    source = (tmp_path / forward.name / "module.py").read_text()
    pooling = [k for k in source.split("@triton.jit") if "aten.mean.dim" in k.split("\n")[2]]
    assert len(pooling) == 1 and "aten.sigmoid.default" in pooling[0], source
    assert pooling[0].count("for roffset") == 1, pooling[0]
    assert len(_finishing_kernels(source)) == 1 and "mean__partial" in source, source


@needs_triton
@pytest.mark.parametrize("dim, index", [(0, 1), (1, -1), (2, 0)])
def test_select_backward_fuses_without_zero_fill(dim, index):
    """The gradient of a select is a masked broadcast in a kernel (no ATen zeros + copy); the
    q/k/v split of an attention layer sums three of them into one kernel."""
    x = torch.randn(3, 4, 5, 7, device=DEVICE, requires_grad=True)

    def fn(x):
        parts = [x.select(0, i) for i in range(3)]
        return parts[0] * 2 + parts[1].sin() - parts[2] * parts[2] + x.select(dim, index).sum()

    metrics.reset()
    check_compiled(fn, x)
    backward = [g for g in metrics.compiled_graphs if g.name.endswith("backward")][-1]
    assert not [e for e in backward.externs if "select_backward" in e or "zeros" in e or "fill" in e]
    assert "aten.masked_fill.Scalar" in backward.fused_ops


def test_double_transpose_is_dropped_and_views_print_as_reinterpretations(tmp_path):
    """Host time per ATen call bounds small training steps: a linear layer's backward reads its
    weight as t(t(w)), which is w itself, and the remaining view of the product (whose layout the
    first call checks) is one C call with its layout written out (kernels/views.py)."""

    def fn(x, w, v):
        return ((x @ w.t().t()).view(7, 6) @ v,)

    x, w, v = torch.randn(6, 5), torch.randn(5, 7), torch.randn(6, 2)
    source, outputs = _compiled_source(fn, (x, w, v), tmp_path)
    torch.testing.assert_close(outputs[0], (x @ w).view(7, 6) @ v)
    call = source.split("def call(args):")[1]
    assert "aten.t.default" not in call and ".t()" not in call
    assert "_reinterpret(mm, (7, 6), (6, 1), 0)" in call and "aten.view" not in call and ".view(" not in call


@needs_triton
def test_identical_kernels_are_defined_once(tmp_path):
    """Repeated layers give the same kernel source under different names: Triton would compile
    each; the wrapper defines it once and launches it for every group."""

    def fn(x, w):
        a = (x.sin() * 2) @ w
        return ((a.sin() * 2) @ w,)

    x, w = torch.randn(8, 8, device=DEVICE), torch.randn(8, 8, device=DEVICE)
    source, outputs = _compiled_source(fn, (x, w), tmp_path)
    torch.testing.assert_close(outputs[0], fn(x, w)[0])
    assert len(re.findall(r"def kernel_\d+\(", source)) == 1, source
    assert metrics.compiled_graphs[-1].kernels == ["kernel_0", "kernel_0"]


@needs_triton
def test_no_inplace_outputs_under_autotune(tmp_path):
    """Autotuning launches each kernel several times on its arguments: an output written over
    its input would feed the next launch."""
    x, w = torch.randn(37, 19, device=DEVICE), torch.randn(19, 23, device=DEVICE)
    gm = make_fx(lambda x, w: ((x @ w).relu() * 2,))(x, w)
    config = AitConfig.create({"debug_dir": str(tmp_path), "cache_dir": str(tmp_path / "cache"), "autotune": True},
                              environ={})
    outputs = compile_graph(gm, [x, w], config)([x, w])
    torch.testing.assert_close(outputs[0], (x @ w).relu() * 2)
    source = (tmp_path / metrics.compiled_graphs[-1].name / "module.py").read_text()
    assert ("mul", "mm") not in REUSE.findall(source)


@needs_triton
def test_no_reuse_of_a_buffer_also_read_through_another_view(tmp_path):
    """The kernel reads m directly and through m.t(): writing over m element by element would
    change the transposed reads of elements not yet read."""

    def fn(x, w):
        m = x @ w
        return (m * 2 + m.t(),)

    x, w = torch.randn(9, 9, device=DEVICE), torch.randn(9, 9, device=DEVICE)
    source, outputs = _compiled_source(fn, (x, w), tmp_path)
    assert not any(b.startswith("mm") for _, b in REUSE.findall(source)), source
    torch.testing.assert_close(outputs[0], fn(x, w)[0])


@needs_triton
def test_a_transposed_output_takes_a_dying_buffer_of_its_own_strides_only(tmp_path):
    """Both read at the offsets the output is written at: the transposed product itself (dense,
    not contiguous) is taken over, its tensor keeps the output's strides; a transposed *view* of a
    contiguous product is not, since the output would take the base's tensor and strides
    (pinverse's gradient came out transposed when it was)."""

    def own_strides(x, w):
        held = x.t() * 3  # a kernel's (9, 7) output, laid out as x.t(): strides (1, 9)
        product = held @ w  # read by an ATen call, so the next kernel runs after it
        return ((held * product).relu(),)  # held dies here, read where the output is written

    def through_a_view(a, b, c):
        product = a @ b  # contiguous; the kernel reads it transposed, in the output's order
        return (-product.t() + c,)

    for fn, inputs, taken_from in ((own_strides, (torch.randn(7, 9, device=DEVICE), torch.randn(7, 7, device=DEVICE)), "mul"),
                                   (through_a_view, tuple(torch.randn(5, 5, device=DEVICE) for _ in range(3)), "mm")):
        source, outputs = _compiled_source(fn, inputs, tmp_path / fn.__name__)
        want = fn(*inputs)[0]
        torch.testing.assert_close(outputs[0], want)
        assert outputs[0].stride() == want.stride(), (fn.__name__, outputs[0].stride(), want.stride())
        taken = [b for _, b in REUSE.findall(source) if b == taken_from]
        assert bool(taken) == (fn is own_strides), (fn.__name__, source)


def test_elementwise_aten_calls_write_into_dying_inputs_where_nothing_is_generated(monkeypatch):
    """fusion off (the CPU without the interpreter): relu after a matmul runs in place, as
    nn.ReLU(inplace=True) does in eager; a graph input, a value read again later and a
    broadcast result are never written."""
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)
    monkeypatch.setenv("AIT_ONEDNN_GEMMS", "never")  # the ReLU stays an ATen call, not oneDNN's post-op

    def fn(x, w, b):
        h = torch.relu(x @ w)           # the product dies in relu: in place
        kept = torch.sigmoid(h)         # h dies: in place; kept is read twice below
        spread = kept.sum(0) + b        # a fresh [6] buffer
        # graph order: kept * spread (kept is read again by exp, and spread is broadcast: out of
        # place), then kept.exp() (kept's last reader: in place); x is an input
        return kept * spread + kept.exp(), x.cos()

    x, w, b = torch.randn(5, 6), torch.randn(6, 6), torch.randn(6)
    with torch.no_grad():
        check_compiled(fn, x, w, b, backward=False)
    externs = metrics.compiled_graphs[0].externs
    assert "aten.relu_.default" in externs and "aten.sigmoid_.default" in externs
    assert "aten.mul.Tensor" in externs and "aten.mul_.Tensor" not in externs  # kept is read again later
    assert "aten.exp_.default" in externs  # kept dies in exp, after the product read it
    assert "aten.cos.default" in externs  # x is the caller's
    x.requires_grad_(True)
    check_compiled(fn, x, w, b)  # and in training, where the forward saves what the backward reads


class _LinearRelu(torch.nn.Module):
    """The encoder block's MLP: a linear layer on a 3-d input is addmm(...).view(...), and the
    ReLU reads that view, the product's last use."""

    def __init__(self):
        super().__init__()
        self.up, self.down = torch.nn.Linear(6, 12), torch.nn.Linear(12, 6)

    def forward(self, x):
        return self.down(torch.relu(self.up(x))) + x


def test_relu_writes_through_the_view_of_a_dying_product_where_nothing_is_generated(monkeypatch):
    """fusion off (the CPU without the interpreter): the ReLU after a linear layer on a 3-d input
    runs in place through the view, as eager's nn.ReLU(inplace=True) does, in inference and in
    the training forward, where the ReLU's result is saved for the backward."""
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)
    # MKL's GEMMs: oneDNN's measured choice, which a loaded machine can tip, folds the ReLU away
    monkeypatch.setenv("AIT_ONEDNN_GEMMS", "never")
    model, x = _LinearRelu(), torch.randn(2, 5, 6)
    with torch.no_grad():
        check_compiled(model, x, backward=False)
    assert "aten.relu_.default" in metrics.compiled_graphs[0].externs
    metrics.reset()
    check_compiled(model, x.requires_grad_(True))
    forward = next(g for g in metrics.compiled_graphs if g.kind == "forward")
    assert "aten.relu_.default" in forward.externs


def test_a_result_written_through_a_view_is_never_the_callers(monkeypatch):
    """Written through a view, the result would be a view of the product: returned to the caller,
    it stays a fresh tensor (out of place)."""
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)
    monkeypatch.setenv("AIT_ONEDNN_GEMMS", "never")  # the ReLU stays an ATen call, not oneDNN's post-op

    def fn(x, w):
        return torch.relu((x @ w).view(2, 3, 4))

    x, w = torch.randn(6, 5), torch.randn(5, 4)
    with torch.no_grad():
        check_compiled(fn, x, w, backward=False)
    externs = metrics.compiled_graphs[0].externs
    assert "aten.relu.default" in externs and "aten.relu_.default" not in externs


def test_add_and_mul_write_into_their_dying_second_operand(monkeypatch):
    """``y * x.sin()``: the sine is a fresh buffer that dies in the product, y is the caller's;
    the product is written into the sine (operands swapped: exact in IEEE arithmetic), bit for bit
    eager's result. A broadcast operand, or one read again later, is never written."""
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)

    def fn(x, y, b):
        s = x.sin()
        c = x.cos()
        return y * s, b + c, c.exp()   # s dies in the product; c is read again; b + c broadcasts b

    x, y, b = torch.randn(4, 6), torch.randn(4, 6), torch.randn(6)
    with torch.no_grad():
        compiled = torch.compile(fn, backend="ait")(x, y, b)
    externs = metrics.compiled_graphs[0].externs
    assert "aten.mul_.Tensor" in externs  # into the sine
    assert "aten.add.Tensor" in externs and "aten.add_.Tensor" not in externs  # c is read by exp later
    for got, expected in zip(compiled, fn(x, y, b)):
        assert torch.equal(got, expected)
    metrics.reset()
    check_compiled(fn, x.requires_grad_(True), y, b)


def test_negations_cancel_across_products_where_nothing_is_generated(monkeypatch):
    """The tutorial's backward, tangent * -sin(cos x) * -sin(x): fusion off, the two negations
    cancel (each was a full pass over memory), and the gradients are bit for bit eager's. A
    negation read twice, or one that would cover a broadcast product, stays."""
    from ait_dynamo.kernels import runtime

    monkeypatch.setattr(runtime, "INTERPRETING", False)

    def tutorial(a, b):
        return (a + b).cos().cos()

    a, b = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    compiled = torch.compile(tutorial, backend="ait")
    compiled(a, b).sum().backward()
    compiled_grads = (a.grad.clone(), b.grad.clone())
    a.grad = b.grad = None
    tutorial(a, b).sum().backward()
    assert torch.equal(compiled_grads[0], a.grad) and torch.equal(compiled_grads[1], b.grad)
    backward = next(g for g in metrics.compiled_graphs if g.kind == "backward")
    assert not any(op.startswith("aten.neg") for op in backward.externs), backward.externs
    metrics.reset()

    def kept(x, small):
        n = -small                       # [6], broadcast over x: moved onto x * n it would grow
        m = -x
        return x * n, m * x, m.exp()     # m is read twice

    x, small = torch.randn(4, 6), torch.randn(6)
    with torch.no_grad():
        check_compiled(kept, x, small, backward=False)
    assert metrics.compiled_graphs[0].externs.count("aten.neg.default") == 2


def test_two_getitems_of_one_element_are_one_buffer_to_the_in_place_pass():
    """``getitem(ln, 0)`` twice names one tensor twice: writing ReLU into the first would change
    what exp reads through the second."""
    import operator

    from ait_dynamo.passes.reinplace import reinplace_dying_inputs

    aten = torch.ops.aten
    gm = make_fx(lambda x, w, b: aten.native_layer_norm.default(x, [4], w, b, 1e-5))(
        torch.randn(3, 4), torch.randn(4), torch.randn(4))
    graph = gm.graph
    norm = next(n for n in graph.nodes if n.target == aten.native_layer_norm.default)
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        first, second = (graph.call_function(operator.getitem, (norm, 0)) for _ in range(2))
        relu = graph.call_function(aten.relu.default, (first,))
        exp = graph.call_function(aten.exp.default, (second,))
        total = graph.call_function(aten.add.Tensor, (relu, exp))
    for node in (first, second, relu, exp, total):
        node.meta["val"] = torch.empty(3, 4)
    output.args = ((total,),)
    graph.eliminate_dead_code()
    gm.recompile()
    gm = reinplace_dying_inputs(gm, AitConfig.create({"fusion": False}, environ={}))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert aten.relu.default in targets and aten.exp.default in targets  # neither writes the shared buffer
    assert aten.add_.Tensor in targets  # relu's own fresh result dies in the sum


@needs_triton
def test_split_column_sums_under_dynamic_shapes(tmp_path):
    """Symbolic rows: the split count is decided per call and passed to the finishing kernel,
    which Triton's JIT then specialises as it needs (a count of 1 is a constant to it)."""
    torch.manual_seed(0)
    w = torch.randn(40, device=DEVICE, requires_grad=True)
    b = torch.randn(40, device=DEVICE, requires_grad=True)
    metrics.reset()
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, w, b: F.layer_norm(x, (40,), w, b), backend="ait", dynamic=True,
                             options={"debug_dir": str(tmp_path)})
    for rows in (37, 1500, 130):
        x = torch.randn(rows, 40, device=DEVICE, requires_grad=True)
        got = torch.autograd.grad(compiled(x, w, b).sum(), (w, b))
        want = torch.autograd.grad(F.layer_norm(x, (40,), w, b).sum(), (w, b))
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=2e-5)
    backward = [g for g in metrics.compiled_graphs if g.name.endswith("backward")][-1]
    source = (tmp_path / backward.name / "module.py").read_text()
    assert len(_finishing_kernels(source)) == 1
    assert "xnumel=None" in source and "_rt.reduction_split(40, sym_" in source, source
