"""Our min-cut rematerialization partitioner: exact gradients, fewer saved bytes than functorch's,
the seed tutorial's partition, the memory budget, the report, and the partition time."""

from __future__ import annotations

import copy
import functools
import math
import os
import random
import warnings

import pytest
import torch
from functorch.compile import aot_function, aot_module, make_boxed_func
from torch.fx.experimental.proxy_tensor import make_fx
from torch import nn
from torch.nn import functional as F
from utils import check_compiled, needs_cpu_triton

import ait_dynamo
from ait_dynamo import AitConfig, memory_efficient_fusion
from ait_dynamo.partitioners import REPORTS, min_cut_rematerialization_partition
from ait_dynamo.partitioners.maxflow import FlowNetwork, min_cut_source_side
from ait_dynamo.partitioners.op_classes import OpClass, op_class
from ait_dynamo.partitioners.snapshots import SNAPSHOT_META
from ait_dynamo.passes.decompositions import decomposition_table
from benchmarks.models import EncoderBlock, LoweringModel, SimpleMLP, tutorial_fn
from benchmarks.partition_bench import capture_joint_graph, time_partition, transformer_joint_graph

aten = torch.ops.aten


class ResidualMLP(nn.Module):
    def __init__(self, dim: int = 24, layers: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
                                                  nn.Linear(4 * dim, dim)) for _ in range(layers))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


class Attention(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


class LayerNormChain(nn.Module):
    def __init__(self, dim: int = 40):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm2(torch.tanh(self.norm1(x)) * 2.0 + x).sin()


class DropoutMLP(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(0.3), nn.Linear(2 * dim, dim))

    def forward(self, x):
        return F.dropout(self.net(x), 0.2).relu()


def _workloads():
    torch.manual_seed(0)
    return {
        "simple_mlp": (SimpleMLP(32), (torch.randn(8, 32, requires_grad=True),)),
        "encoder_block": (EncoderBlock(32, 4, 64), (torch.randn(2, 7, 32, requires_grad=True),)),
        "lowering_model": (LoweringModel(32, 4, 64), (torch.randn(2, 5, 32, requires_grad=True),)),
        "tutorial": (tutorial_fn, tuple(torch.randn(3, 5, requires_grad=True) for _ in range(4))),
        "residual_mlp": (ResidualMLP(), (torch.randn(6, 24, requires_grad=True),)),
        "attention": (Attention(), (torch.randn(2, 6, 32, requires_grad=True),)),
        "layer_norm": (LayerNormChain(), (torch.randn(5, 40, requires_grad=True),)),
        "dropout": (DropoutMLP(), (torch.randn(4, 16, requires_grad=True),)),
    }


def _grads(fn, inputs, options, seed=0):
    """Output and gradients of torch.compile(fn, backend='ait', options) on fresh input copies."""
    torch._dynamo.reset()
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    module = copy.deepcopy(fn) if isinstance(fn, nn.Module) else fn
    compiled = torch.compile(module, backend="ait", options=options)
    torch.manual_seed(seed)
    out = compiled(*inputs)
    out.backward(torch.ones_like(out))
    params = list(module.parameters()) if isinstance(module, nn.Module) else []
    return out.detach(), [x.grad for x in inputs] + [p.grad for p in params]


@needs_cpu_triton
@pytest.mark.parametrize("name", list(_workloads()))
def test_gradients_exact_and_fewer_bytes_than_functorch(name, tmp_path):
    fn, inputs = _workloads()[name]
    # Against eager and fp64 (forward and backward), with the default options: our partitioner.
    check_compiled(fn, *inputs, seed=3)
    # Bitwise equal to the default partition (recompute replays the same ops on the same values).
    out_default, grads_default = _grads(fn, inputs, {"partitioner": "default"})
    REPORTS.clear()
    out_ours, grads_ours = _grads(fn, inputs, {"debug_dir": str(tmp_path)})
    assert torch.equal(out_ours, out_default)
    for ours, default in zip(grads_ours, grads_default):
        assert (ours is None) == (default is None)
        if ours is not None:
            assert torch.equal(ours, default), f"{name}: gradient differs from the default partition"
    assert len(REPORTS) == 1, "one training graph, one partition"
    report = REPORTS[-1]
    assert report.functorch_bytes is not None
    assert report.saved_bytes <= report.functorch_bytes, (
        f"{name}: we save {report.saved_bytes} B, functorch's min-cut {report.functorch_bytes} B")
    assert report.saved_bytes <= report.default_bytes
    assert os.path.exists(tmp_path / report.name / "partition.txt")


def _partition_report(fn, inputs, **options):
    module = fn if isinstance(fn, nn.Module) else _FunctionModule(fn)
    joint = capture_joint_graph(module, *inputs)
    min_cut_rematerialization_partition(joint.copy(), None, num_fwd_outputs=joint.num_fwd_outputs,
                                        static_lifetime_input_indices=joint.static_lifetime_input_indices,
                                        compare_with_functorch=True, **options)
    return REPORTS[-1]


@pytest.mark.parametrize("name", ["simple_mlp", "encoder_block", "tutorial", "residual_mlp", "layer_norm"])
def test_fewer_bytes_than_the_default_partition(name):
    """Where recomputation pays, strictly fewer bytes than the default partition."""
    fn, inputs = _workloads()[name]
    report = _partition_report(fn, inputs)
    assert report.saved_bytes < report.default_bytes
    assert report.saved_bytes <= report.functorch_bytes


def test_mlp_saves_fewer_bytes_than_functorch():
    """The seed MLP: we save the gelu's input only (the gelu and its derivative are recomputed in
    the backward kernel that reads that input); functorch's min-cut also saves the gelu output."""
    fn, inputs = _workloads()["simple_mlp"]
    report = _partition_report(fn, inputs)
    assert report.saved_bytes < report.functorch_bytes
    assert any(entry.startswith("gelu ") for entry in report.recomputed)


class _FunctionModule(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _partitioned_graphs(fn, inputs, **options):
    """(forward graph module, backward graph module) our partitioner gives ``fn``."""
    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm)

    config = AitConfig.create(options, environ={})
    partition = functools.partial(min_cut_rematerialization_partition, config=config)
    wrap = aot_module if isinstance(fn, nn.Module) else aot_function
    # the backend's decompositions, so the joint graph is the one ait partitions
    compiled = wrap(fn, fw_compiler=keep, bw_compiler=keep, partition_fn=partition,
                    decompositions=decomposition_table(config))
    out = compiled(*inputs)
    out.sum().backward()
    return graphs[0], graphs[1]


def _ops(gm):
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_seed_tutorial_partition_saves_only_the_sum_and_recomputes_the_cos():
    inputs = [torch.randn(2, 4, requires_grad=True) for _ in range(4)]
    fw, bw = _partitioned_graphs(tutorial_fn, inputs)
    fw_output = next(iter(fw.graph.find_nodes(op="output"))).args[0]
    # The tutorial's forward returns [cos_1, add_2]: the result and the sum, nothing else.
    assert len(fw_output) == 2
    saved = fw_output[1]
    assert saved.target == aten.add.Tensor and saved.args[0].target == aten.add.Tensor
    bw_inputs = [n.name for n in bw.graph.find_nodes(op="placeholder")]
    assert len(bw_inputs) == 2 and any("tangents" in n for n in bw_inputs)
    # The backward recomputes the cos from the saved sum: cos, then sin of it and sin of the sum.
    bw_ops = _ops(bw)
    assert bw_ops.count(aten.cos.default) == 1
    assert bw_ops.count(aten.sin.default) == 2
    report = REPORTS[-1]
    assert [s.name for s in report.saved] == [saved.name]
    assert any(entry.startswith("cos ") for entry in report.recomputed)


def test_random_ops_are_saved_not_recomputed():
    torch.manual_seed(0)
    x = torch.randn(8, 16, requires_grad=True)

    def fn(x):
        y = torch.sin(x)
        return F.dropout(y, 0.5, training=True).cos() + torch.rand_like(x) * y

    _, bw = _partitioned_graphs(fn, [x])
    for node in bw.graph.nodes:
        if isinstance(node.target, torch._ops.OpOverload):
            assert torch.Tag.nondeterministic_seeded not in node.target.tags, f"{node} recomputed in backward"


def test_op_classes():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    x.meta["val"] = torch.empty(2, 2)

    def node(target, *args):
        return graph.call_function(target, (x, *args))

    assert op_class(x) == OpClass.PLACEHOLDER
    assert op_class(node(aten.add.Tensor, x)) == OpClass.POINTWISE
    assert op_class(node(aten.mm.default, x)) == OpClass.COMPUTE_INTENSIVE
    assert op_class(node(aten.view.default, [4])) == OpClass.VIEW
    assert op_class(node(aten.sum.dim_IntList, [0])) == OpClass.REDUCTION
    assert op_class(node(aten.native_dropout.default, 0.5, True)) == OpClass.RANDOM
    assert op_class(node(aten.copy_.default, x)) == OpClass.IMPURE
    assert op_class(node(aten.convolution.default)) == OpClass.COMPUTE_INTENSIVE
    assert op_class(node(aten.index_select.default, 0, x)) == OpClass.OTHER


def _random_network(rng: random.Random, vertices: int) -> FlowNetwork:
    network = FlowNetwork()
    for _ in range(vertices - 2):
        network.add_vertex()
    for _ in range(vertices * 3):
        tail, head = rng.randrange(vertices), rng.randrange(vertices)
        if head == FlowNetwork.SOURCE or tail == FlowNetwork.SINK:
            continue
        network.add_edge(tail, head, math.inf if rng.random() < 0.1 else rng.randint(1, 20))
    return network


def _cut_value(network: FlowNetwork, source_side: set[int]) -> float:
    return sum(c for t, h, c in zip(network.tails, network.heads, network.capacities)
               if t in source_side and h not in source_side)


def test_max_flow_solvers_agree_with_brute_force():
    rng = random.Random(0)
    checked = 0
    for _ in range(40):
        network = _random_network(rng, 8)
        best = math.inf
        others = list(range(2, network.num_vertices))
        for mask in range(2 ** len(others)):
            side = {FlowNetwork.SOURCE} | {v for i, v in enumerate(others) if mask >> i & 1}
            best = min(best, _cut_value(network, side))
        if not math.isfinite(best):
            continue
        for solver in ("scipy", "networkx"):
            side = min_cut_source_side(network, solver)
            assert FlowNetwork.SOURCE in side and FlowNetwork.SINK not in side
            assert _cut_value(network, side) == best, solver
        checked += 1
    assert checked > 10


def _mlp_joint(layers=4, dim=32):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim), nn.Tanh())
                            for _ in range(layers)])
    return model, capture_joint_graph(model, torch.randn(16, dim, requires_grad=True))


def _partition_with_budget(joint, budget):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        min_cut_rematerialization_partition(
            joint.copy(), None, num_fwd_outputs=joint.num_fwd_outputs,
            static_lifetime_input_indices=joint.static_lifetime_input_indices,
            memory_budget=budget, compare_with_functorch=False)
    return REPORTS[-1], [str(w.message) for w in caught if "memory budget" in str(w.message)]


def test_memory_budget_sweep_is_monotonic_and_warns_when_unreachable():
    _, joint = _mlp_joint()
    unbudgeted, _ = _partition_with_budget(joint, None)
    sweep = [1.0, 0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.02]
    saved = []
    for fraction in sweep:
        report, warned = _partition_with_budget(joint, fraction)
        saved.append(report.saved_bytes)
        assert report.budget_bytes == int(fraction * report.default_bytes)
        if report.budget_met:
            assert report.saved_bytes <= report.budget_bytes and not warned
        else:
            assert warned and "best achievable" in warned[0]
    assert all(a >= b for a, b in zip(saved, saved[1:])), saved
    assert saved[0] == unbudgeted.saved_bytes  # a budget the default cut meets changes nothing
    assert saved[-1] < saved[0], "a tight budget must recompute more (the matmuls too)"
    # Budgets in bytes behave the same as fractions.
    report, _ = _partition_with_budget(joint, saved[3])
    assert report.saved_bytes <= saved[3]


def test_memory_budget_recomputes_part_of_a_group_of_equal_matmuls():
    """Eight equal layers give eight matmuls of one bytes-per-ns ratio; a budget between "none
    recomputed" and "all recomputed" must pay for only some of them, more as it shrinks."""
    _, joint = _mlp_joint(layers=8)

    def costly_recomputes(budget):
        report, _ = _partition_with_budget(joint, budget)
        assert report.budget_met and report.saved_bytes <= report.budget_bytes
        return sum("costly" in line for line in report.recomputed)

    counts = [costly_recomputes(f) for f in (0.6, 0.5, 0.4, 0.3)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    assert 0 < counts[0] < 8, counts


def test_memory_budget_recomputes_matmuls_with_exact_gradients():
    model, _ = _mlp_joint(layers=3)
    x = torch.randn(16, 32, requires_grad=True)
    out_default, grads_default = _grads(model, [x], {"partitioner": "default"})
    REPORTS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out_tight, grads_tight = _grads(model, [x], {"memory_budget": 0.05})
    report = REPORTS[-1]
    assert any("mm" in entry for entry in report.recomputed), report.recomputed
    assert torch.equal(out_tight, out_default)
    for tight, default in zip(grads_tight, grads_default):
        torch.testing.assert_close(tight, default, rtol=0, atol=0)


def test_memory_budget_option_parsing():
    assert AitConfig.create({"memory_budget": "2GiB"}, environ={}).memory_budget == 2 * 2**30
    assert AitConfig.create({"memory_budget": "512MB"}, environ={}).memory_budget == 512 * 10**6
    assert AitConfig.create({"memory_budget": 1000}, environ={}).memory_budget == 1000
    assert AitConfig.create({"memory_budget": 0.25}, environ={}).memory_budget == 0.25
    assert AitConfig.create({"memory_budget": "50%"}, environ={}).memory_budget == 0.5
    assert AitConfig.create({"memory_budget": None}, environ={}).memory_budget is None
    assert AitConfig.create(environ={"AIT_MEMORY_BUDGET": "1.5KiB"}).memory_budget == 1536
    for bad in ("lots", -5, 1.5, 0.0, True, "2 parsecs"):
        with pytest.raises(ValueError, match="memory_budget"):
            AitConfig.create({"memory_budget": bad}, environ={})


@needs_cpu_triton
def test_default_backend_and_memory_efficient_fusion_use_our_partitioner():
    model = SimpleMLP(16)
    x = torch.randn(4, 16, requires_grad=True)
    REPORTS.clear()
    torch.compile(model, backend="ait")(x).sum().backward()
    assert len(REPORTS) == 1
    check_compiled(tutorial_fn, *[torch.randn(3, 3, requires_grad=True) for _ in range(4)],
                   compiler=memory_efficient_fusion)
    assert len(REPORTS) == 2
    assert ait_dynamo.min_cut_rematerialization_partition is min_cut_rematerialization_partition


def test_backward_recomputes_late():
    """A recomputed value is computed right before its first use, not at the start of the backward."""
    model = ResidualMLP(dim=16, layers=3)
    x = torch.randn(4, 16, requires_grad=True)
    _, bw = _partitioned_graphs(model, [x])
    nodes = list(bw.graph.nodes)
    recomputed_gelus = [i for i, n in enumerate(nodes) if n.target == aten.gelu.default]
    first_tangent_user = min(i for i, n in enumerate(nodes) if any("tangents" in a.name for a in n.all_input_nodes))
    assert len(recomputed_gelus) == 3
    # the last block's gelu is needed first; the first block's only after two blocks' gradients
    assert max(recomputed_gelus) > first_tangent_user


@pytest.mark.slow
def test_partition_time_of_a_24_layer_transformer():
    joint = transformer_joint_graph(layers=24, dim=32, heads=4)
    seconds, _ = time_partition(joint, min_cut_rematerialization_partition, repeat=3, compare_with_functorch=False)
    print(f"\n24-layer transformer joint graph ({joint.num_nodes()} nodes): partitioned in {seconds:.3f} s")
    # Target is 1 s on the 2-core CI machine; the bound is generous for a loaded machine.
    assert seconds < 5.0


def test_partitioner_failure_falls_back_to_the_default_partition(monkeypatch):
    import ait_dynamo.partitioners.mincut as mincut

    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(mincut, "choose_cut", broken)
    inputs = [torch.randn(3, 3, requires_grad=True) for _ in range(4)]
    with pytest.warns(RuntimeWarning, match="solver exploded"):
        fw, bw = _partitioned_graphs(tutorial_fn, inputs)
    # the default partition: the forward saves both the sum and the cos
    assert len(next(iter(fw.graph.find_nodes(op="output"))).args[0]) == 3
    with pytest.raises(ValueError, match="memory_budget"):
        min_cut_rematerialization_partition(None, None, num_fwd_outputs=1, memory_budget=7.5)


def test_attention_without_dropout_is_compute_intensive_with_dropout_random():
    graph = torch.fx.Graph()
    q = graph.placeholder("q")
    sdpa = aten._scaled_dot_product_flash_attention_for_cpu.default
    assert op_class(graph.call_function(sdpa, (q, q, q))) == OpClass.COMPUTE_INTENSIVE
    assert op_class(graph.call_function(sdpa, (q, q, q, 0.0))) == OpClass.COMPUTE_INTENSIVE
    assert op_class(graph.call_function(sdpa, (q, q, q), {"dropout_p": 0.1})) == OpClass.RANDOM


def test_attention_recomputed_under_a_tight_budget_with_exact_gradients():
    model = Attention()
    x = torch.randn(2, 6, 32, requires_grad=True)
    out_default, grads_default = _grads(model, [x], {"partitioner": "default"})
    REPORTS.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out_tight, grads_tight = _grads(model, [x], {"memory_budget": 0.01})
    assert any("attention" in entry for entry in REPORTS[-1].recomputed), REPORTS[-1].recomputed
    assert torch.equal(out_tight, out_default)
    for tight, default in zip(grads_tight, grads_default):
        assert torch.equal(tight, default)


def _scale_then_overwrite(a, b, w, state):
    # ``a`` is read, then overwritten in place: the backward needs ``t``, whose value depends on
    # ``a``'s old contents (an in-place probe found the min-cut recomputing ``t`` from ``a``)
    t = a * 1.5 + b * w
    state.mul_(0.9).add_(t.detach().mean() * 0.1)
    a.sigmoid_().mul_(2)
    t = t - t.sum(0, keepdim=True) / t.shape[0]
    a.narrow(0, 1, 3).sin_()
    return t * w


@needs_cpu_triton  # on the CPU without Triton, ait keeps the default partition by design
@pytest.mark.parametrize("partitioner", ["min_cut", "default", "functorch"])
def test_an_input_the_forward_overwrites_is_not_saved(partitioner):
    torch._dynamo.reset()
    REPORTS.clear()
    inputs = (torch.randn(5), torch.randn(5), torch.randn(5), torch.zeros(()))
    eager_inputs = [x.clone() for x in inputs]
    compiled_inputs = [x.clone() for x in inputs]
    eager_inputs[2].requires_grad_()
    compiled_inputs[2].requires_grad_()
    compiled = torch.compile(_scale_then_overwrite, backend="ait", options={"partitioner": partitioner})
    expected = _scale_then_overwrite(*eager_inputs)
    actual = compiled(*compiled_inputs)
    cotangent = torch.randn(5)
    (expected_grad,) = torch.autograd.grad(expected, eager_inputs[2], cotangent)
    (actual_grad,) = torch.autograd.grad(actual, compiled_inputs[2], cotangent)
    torch.testing.assert_close(actual, expected)
    torch.testing.assert_close(actual_grad, expected_grad)
    for actual_input, expected_input in zip(compiled_inputs, eager_inputs):
        torch.testing.assert_close(actual_input, expected_input)
    if partitioner == "min_cut":
        (report,) = REPORTS
        assert "primals_1" not in {saved.name for saved in report.saved}, report.saved


def test_a_backward_reader_of_an_overwritten_input_gets_a_copy_of_its_old_value():
    # eager refuses this at backward() (a saved tensor modified in place); a joint graph can still
    # read the input in the backward, and must then read its old value
    def joint(primals, tangents):
        (x,), (tangent,) = primals, tangents
        out = x * 2
        grad = tangent * x
        x.copy_(out)
        return [out, grad]

    x, tangent = torch.randn(4), torch.randn(4)
    joint_module = make_fx(joint)([x], [tangent])
    fw_module, bw_module = ait_dynamo.partitioners.partition_function(AitConfig.create(environ={}))(
        joint_module, None, num_fwd_outputs=1)
    assert not any("primals" in str(node.target) for node in bw_module.graph.find_nodes(op="placeholder"))
    overwritten = x.clone()
    out, *saved = fw_module(overwritten)
    torch.testing.assert_close(overwritten, x * 2)
    (grad,) = bw_module(*saved, tangent)
    torch.testing.assert_close(grad, tangent * x)


@needs_cpu_triton
def test_an_input_given_a_value_that_requires_grad_is_not_saved():
    # AOTAutograd copies such an input's new value in after the forward (outside the graph). The
    # min-cut saved the input and recomputed ``t`` from it; backward() then raised (autograd saw a
    # saved tensor modified in place)
    def overwrite_with_a_differentiable_value(a, b, w, state):
        t = a * 1.5 + b * w
        state.mul_(0.9).add_(t.detach().mean() * 0.1)
        a.copy_(t.sin())
        a.narrow(0, 1, a.shape[0] - 1).mul_(0.5).add_(1.0)
        a.index_fill_(0, torch.arange(3, a.shape[0], 2), 0.3)
        return t * w

    check_compiled(overwrite_with_a_differentiable_value, torch.randn(8, 8, 3), torch.randn(1, 8, 3),
                   torch.randn(3, requires_grad=True), torch.zeros(()), dynamic=True)


class _ConvBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)) + x).sigmoid()


def _joint_partition(joint, **options):
    config = AitConfig.create(options, environ={})
    return ait_dynamo.partitioners.partition_function(config)(
        joint.copy(), None, num_fwd_outputs=joint.num_fwd_outputs,
        static_lifetime_input_indices=joint.static_lifetime_input_indices)


def test_training_batch_norm_is_recomputed_from_snapshots_of_its_statistics_under_a_budget():
    """The running statistics are inputs the forward overwrites: never saved. Their snapshots
    (partitioners/snapshots.py) let a tight budget recompute the training batch norm in the
    backward; without a budget the forward keeps no snapshot."""
    torch.manual_seed(0)
    joint = capture_joint_graph(_ConvBatchNorm().train(), torch.randn(2, 3, 12, 12))
    batch_norms = lambda gm: [n for n in gm.graph.nodes  # noqa: E731
                              if "batch_norm" in str(n.target) and "backward" not in str(n.target)]
    snapshots = lambda gm: [n for n in gm.graph.nodes if n.meta.get(SNAPSHOT_META)]  # noqa: E731

    fw_module, bw_module = _joint_partition(joint)
    unbudgeted = REPORTS[-1].saved_bytes
    assert not snapshots(fw_module) and not batch_norms(bw_module)

    fw_module, bw_module = _joint_partition(joint, memory_budget=0.3)
    assert REPORTS[-1].saved_bytes < unbudgeted
    assert batch_norms(bw_module), "no batch norm recomputed"
    saved = {n.name for n in next(iter(fw_module.graph.find_nodes(op="output"))).all_input_nodes}
    assert {n.name for n in snapshots(fw_module)} <= saved  # what is left of them is saved
    read_in_backward = {str(a) for n in batch_norms(bw_module) for a in n.args[3:5]}
    assert all("clone" in name for name in read_in_backward), read_in_backward


@needs_cpu_triton
@pytest.mark.parametrize("budget", [None, 0.3])
def test_batch_norm_trained_twice_before_one_backward_matches_eager(budget):
    """Two forwards, one backward: a saved running statistic would have been overwritten by the
    second forward before the first backward (autograd raises); the snapshots are the old values.
    Gradients and running statistics as eager's."""
    torch.manual_seed(0)
    model = _ConvBatchNorm().train()
    reference = copy.deepcopy(model)
    options = {} if budget is None else {"memory_budget": budget}
    compiled = torch.compile(model, backend="ait", options=options)
    first, second = torch.randn(2, 3, 12, 12), torch.randn(2, 3, 12, 12)
    (compiled(first).sum() + compiled(second).pow(2).sum()).backward()
    (reference(first).sum() + reference(second).pow(2).sum()).backward()
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got.grad, want.grad, msg=name)
    for (name, got), want in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(got, want, msg=name)
