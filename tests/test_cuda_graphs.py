"""CUDA-graph replay (option ``cuda_graphs`` / ``mode="reduce-overhead"``).

On the CPU the capture is simulated: a "replay" reruns the compiled code on the graph's own input
buffers and writes the results into the captured output tensors, which is what a real replay does
to memory. That checks what the runner reads in place, what it copies and when it refuses to
replay. The GPU tests capture real CUDA graphs.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import pytest
import torch
from torch import nn

from ait_dynamo import cuda_graphs
from ait_dynamo.config import AitConfig
from utils import needs_cpu_triton


class SimulatedRecorder:
    pool_keeps_memory = False  # its "pool" is ordinary memory: the runner must hold what it reads

    def __init__(self, pair: cuda_graphs.GraphPair):
        self.pair = pair

    def record(self, run: Callable[[], list[Any]]) -> tuple[list[Any], Callable[[], None]]:
        outputs = run()

        def replay() -> None:
            for captured, fresh in zip(outputs, run()):
                if isinstance(captured, torch.Tensor):
                    captured.copy_(fresh)

        return outputs, replay


@pytest.fixture(autouse=True)
def _no_earlier_graphs():
    cuda_graphs._INSTANCES.clear()  # graphed callables of earlier tests may still be alive


@pytest.fixture
def simulated(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "RECORDER_FACTORY", [SimulatedRecorder])


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request, monkeypatch):
    """CPU with the simulated capture, or real CUDA graphs on the GPU."""
    if request.param == "cpu":
        monkeypatch.setattr(cuda_graphs, "RECORDER_FACTORY", [SimulatedRecorder])
    return torch.device(request.param)


class Block(nn.Module):
    def __init__(self, dim: int = 24, hidden: int = 40):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x)))) * torch.sigmoid(x)


def _graphed(kind: str) -> list[cuda_graphs.GraphedCallable]:
    return [g for g in cuda_graphs.instances() if g.kind == kind]


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    for p in model.parameters():
        p.grad = None
    x = x.detach().requires_grad_(True)
    out = model(x)
    out.backward(torch.cos(out.detach()))
    return out.detach(), [x.grad] + [p.grad for p in model.parameters()]


def test_training_steps_replay_and_match_eager(device):
    torch.manual_seed(0)
    eager = Block().to(device)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="ait", options={"cuda_graphs": True})
    kept = []
    for step in range(5):
        x = torch.randn(3, 7, 24, device=device)  # a new input tensor every step: copied into the graph's buffer
        out, grads = _step(compiled, x)
        ref_out, ref_grads = _step(eager, x)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        kept.append((out, grads, ref_out, ref_grads))
    # what a step returned stays as it was after later replays (outputs and gradients are copies)
    for out, grads, ref_out, ref_grads in kept:
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grads[1], ref_grads[1], atol=1e-5, rtol=1e-5)
    (forward,), (backward,) = _graphed("forward"), _graphed("backward")
    assert forward.replays == 3 and backward.replays == 3  # call 1 warms up, call 2 captures
    assert not forward.fallbacks and not backward.fallbacks
    # parameters are read in place; the input and the tangent are copied
    assert sum(forward.capture.static) == len(list(eager.parameters()))
    assert forward.num_kept == 1
    # the backward reads every saved value in place; only the tangent is copied
    assert backward.capture.static.count(False) == 1


def _captured_block(device: torch.device, seed: int) -> tuple[nn.Module, nn.Module]:
    """(eager block, compiled copy whose forward and backward graphs are captured and replayed),
    gradients cleared."""
    torch.manual_seed(seed)
    eager = Block().to(device)
    compiled = torch.compile(copy.deepcopy(eager), backend="ait", options={"cuda_graphs": True})
    for _ in range(3):
        _step(compiled, torch.randn(2, 5, 24, device=device))
    compiled.zero_grad(set_to_none=True)
    return eager, compiled


def _assert_same_parameter_grads(compiled: nn.Module, eager: nn.Module) -> None:
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_two_forwards_before_a_backward_do_not_overwrite_saved_values(device):
    eager, compiled = _captured_block(device, seed=1)
    xs = [torch.randn(2, 5, 24, device=device, requires_grad=True) for _ in range(2)]  # as in _step: no recompile
    outs = [compiled(x) for x in xs]  # the second forward must not replay over the first's saved values
    for out in outs:
        out.sum().backward()
    ref_outs = [eager(x) for x in xs]
    for out in ref_outs:
        out.sum().backward()
    _assert_same_parameter_grads(compiled, eager)
    (forward,) = _graphed("forward")
    assert forward.fallbacks == {"the saved values of its previous run are still in use": 1}


@torch._functorch.config.patch(donated_buffer=False)  # else AOTAutograd refuses retain_graph itself
def test_retain_graph_backward_twice_matches_eager(device):
    """A replayed backward reuses the memory of the saved values it has used; with
    retain_graph=True they are needed again, so that backward runs without its graph."""
    eager, compiled = _captured_block(device, seed=4)
    x = torch.randn(2, 5, 24, device=device, requires_grad=True)
    out, ref = compiled(x), eager(x)
    out.sum().backward(retain_graph=True)
    out.sum().backward()
    ref.sum().backward(retain_graph=True)
    ref.sum().backward()
    _assert_same_parameter_grads(compiled, eager)
    (backward,) = _graphed("backward")
    assert backward.fallbacks == {cuda_graphs.RETAINED: 1} and backward.replays == 2


def test_moved_parameter_runs_without_the_graph(device):
    torch.manual_seed(2)
    model = nn.Linear(8, 8).to(device)
    compiled = torch.compile(model, backend="ait", options={"cuda_graphs": True})
    x = torch.randn(4, 8, device=device)
    with torch.no_grad():
        for _ in range(3):
            compiled(x)
        model.weight.data = torch.randn(8, 8, device=device)  # a new storage: the captured address is stale
        torch.testing.assert_close(compiled(x), model(x))
    (graphed,) = _graphed("inference")
    assert graphed.fallbacks == {"static input 1 is not where it was at capture": 1} or graphed.fallbacks == {
        "static input 0 is not where it was at capture": 1}


def test_moved_static_input_is_found_by_index():
    """The replay's pointer check (one C++ call where torch has it, else a loop) names the first
    static input that moved, and takes a non-tensor in a tensor's place as moved."""
    a, b, c = torch.zeros(3), torch.zeros(3), torch.zeros(3)
    inputs = [a, 7, b, c]
    pointers = [a.data_ptr(), 0, b.data_ptr(), c.data_ptr()]  # one per input, by index
    assert cuda_graphs._moved_static_input(inputs, [0, 2, 3], pointers) is None
    assert cuda_graphs._moved_static_input([a, 7, b, torch.zeros(3)], [0, 2, 3], pointers) == 3
    assert cuda_graphs._moved_static_input([a, 7, None, c], [0, 2, 3], pointers) == 2
    assert cuda_graphs._moved_static_input(inputs, [], []) is None


def test_input_of_another_shape_runs_without_the_graph(device):
    compiled = torch.compile(lambda x: torch.tanh(x) * 2, backend="ait", options={"cuda_graphs": True},
                             dynamic=False)
    base = torch.randn(6, 4, device=device)
    for _ in range(3):
        compiled(base)
    strided = torch.randn(4, 6, device=device).t()  # same shape, other strides
    torch.testing.assert_close(compiled(strided), torch.tanh(strided) * 2)
    torch.testing.assert_close(compiled(base + 1), torch.tanh(base + 1) * 2)
    replayed = [g for g in _graphed("inference") if g.replays]
    assert replayed, "the graph for the contiguous input replays"


def test_outputs_that_view_inputs_stay_views_of_the_callers_tensors(device):
    """A copy of such an output would lose its storage offset, which AOTAutograd may use to
    rebuild the view on the caller's tensor."""
    weight = nn.Parameter(torch.randn(6, 5, device=device))

    def fn(x):
        return x[1:].t(), weight[2:].view(-1), (x * 2).sum()

    compiled = torch.compile(fn, backend="ait", options={"cuda_graphs": True}, dynamic=False)
    big = torch.randn(9, 5, device=device)
    for step in range(4):
        big.copy_(torch.randn(9, 5, device=device))
        x = big[2:]  # storage offset 10
        with torch.no_grad():
            got, want = compiled(x), fn(x)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        assert got[0].data_ptr() == want[0].data_ptr() and got[1].data_ptr() == want[1].data_ptr()
    assert [g.replays for g in _graphed("inference")] == [2]


def test_mutated_buffer_matches_eager(device):
    torch.manual_seed(3)
    eager = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6)).to(device)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="ait", options={"cuda_graphs": True})
    for _ in range(4):
        x = torch.randn(5, 6, device=device)
        compiled(x).sum().backward()
        eager(x).sum().backward()
    torch.testing.assert_close(compiled_model[1].running_mean, eager[1].running_mean)
    torch.testing.assert_close(compiled_model[1].running_var, eager[1].running_var)
    assert compiled_model[1].num_batches_tracked.item() == 4
    assert all(g.replays for g in _graphed("forward"))


def test_cpu_tensors_run_without_graphs_with_one_warning():
    compiled = torch.compile(lambda x: torch.relu(x) + 1, backend="ait", options={"cuda_graphs": True})
    x = torch.randn(9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [compiled(x) for _ in range(4)]
    for result in results:
        torch.testing.assert_close(result, torch.relu(x) + 1)
    messages = [str(w.message) for w in caught if "CUDA graph" in str(w.message)]
    assert len(messages) == 1 and "not all on one CUDA device" in messages[0]


@needs_cpu_triton
def test_host_seeded_random_kernels_are_not_graphed(simulated):
    compiled = torch.compile(lambda x: torch.nn.functional.dropout(x * 2, 0.5, training=True) + 1,
                             backend="ait", options={"cuda_graphs": True, "fallback_random": False})
    with pytest.warns(RuntimeWarning, match="draw Philox seeds on the host"):
        compiled(torch.randn(64))
    assert not cuda_graphs.instances()


def test_modes_set_cuda_graphs_and_autotune():
    assert AitConfig.create(mode="reduce-overhead", environ={}).cuda_graphs
    tuned = AitConfig.create(mode="max-autotune", environ={})
    assert tuned.cuda_graphs and tuned.autotune
    no_graphs = AitConfig.create(mode="max-autotune-no-cudagraphs", environ={})
    assert no_graphs.autotune and not no_graphs.cuda_graphs
    assert not AitConfig.create(mode="reduce-overhead", options={"cuda_graphs": False}, environ={}).cuda_graphs


def test_expanded_input_is_refused(simulated):
    pair = cuda_graphs.GraphPair()
    graphed = cuda_graphs.GraphedCallable(lambda args: [args[0] * 2], "g", "inference", pair)
    assert "overlaps itself" in graphed._capture_refusal([torch.randn(3, 1).expand(3, 4)])


# -- GPU: real CUDA graphs ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_training_replays_match_eager(dtype):
    torch.manual_seed(0)
    eager = Block(64, 96).cuda().to(dtype)
    compiled = torch.compile(copy.deepcopy(eager), backend="ait", mode="reduce-overhead")
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    for _ in range(5):
        x = torch.randn(4, 33, 64, device="cuda", dtype=dtype)
        out, grads = _step(compiled, x)
        ref_out, ref_grads = _step(eager, x)
        torch.testing.assert_close(out, ref_out, **tolerance)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, **tolerance)
    (forward,), (backward,) = _graphed("forward"), _graphed("backward")
    assert forward.replays == 3 and backward.replays == 3 and not forward.disabled and not backward.disabled


@pytest.mark.gpu
def test_gpu_dropout_draws_new_masks_in_each_replay():
    compiled = torch.compile(lambda x: torch.nn.functional.dropout(x, 0.5, training=True), backend="ait",
                             mode="reduce-overhead")
    x = torch.ones(4096, device="cuda")
    masks = [compiled(x) != 0 for _ in range(5)]
    (graphed,) = _graphed("inference")
    assert graphed.replays == 3
    assert not torch.equal(masks[3], masks[4]) and not torch.equal(masks[2], masks[3])
    assert 0.4 < masks[4].float().mean().item() < 0.6


def test_only_outputs_that_may_view_an_input_are_matched_to_inputs():
    """A CUDA graph hands out an output that views an input as that view, and copies the others.
    Which outputs may view an input comes from the graph, not from addresses: the backward frees
    the forward's saved values as it runs, and a fresh gradient can land at a dead input's
    address (on the H200 a bias gradient did, and the next forward overwrote it)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.compile import outputs_aliasing_inputs

    def fn(x, y):
        return x.t(), x * 2, y.add_(1), y.view(-1)[1:], (x + y).relu()

    gm = make_fx(fn)(torch.randn(3, 3), torch.randn(3, 3))
    assert outputs_aliasing_inputs(gm) == [0, 2, 3]
