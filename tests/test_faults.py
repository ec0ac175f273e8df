"""Fault injection: every failure inside ait is survived with correct results and one warning that
names its cause; the numerics guard (option ``verify``) catches a kernel that computes wrong values."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from ait_dynamo import faults, metrics
from ait_dynamo.cache import clear_memory_cache
from ait_dynamo.kernels import autotune, runtime
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")


@pytest.fixture(autouse=True)
def _forget_broken_kernels():
    runtime.BROKEN.clear()
    yield
    runtime.BROKEN.clear()


def _block(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x * 2.0, dim=-1).cos() + x.sum(-1, keepdim=True)


def _ait_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "ait_dynamo" in str(w.message)]


def _check_with_warnings(fn, *inputs, options=None) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_compiled(fn, *inputs, options=options)
    return _ait_warnings(caught)


@needs_triton
@pytest.mark.parametrize("kind,cause", [("compile", "injected compile failure"), ("launch", "injected launch failure")],
                         ids=["compile", "launch"])
def test_a_kernel_that_fails_runs_through_aten(kind, cause):
    x = torch.randn(6, 33, device=DEVICE, requires_grad=True)
    with faults.inject(kind, kernel="kernel_0", graph="backward"):
        messages = _check_with_warnings(_block, x)
    assert len(messages) == 1, messages
    assert cause in messages[0] and "kernel_0" in messages[0]
    assert len(runtime.BROKEN) == 1
    backward = [g for g in metrics.compiled_graphs if g.kind == "backward"][-1]
    assert backward.fallback_reason is None  # only that kernel's group left the kernel path


@needs_triton
def test_every_kernel_failing_still_gives_eager_results():
    x = torch.randn(4, 17, device=DEVICE, requires_grad=True)
    with faults.inject("compile"):
        messages = _check_with_warnings(_block, x)
    kernels = sum(len(set(g.kernels)) for g in metrics.compiled_graphs)
    assert kernels >= 2 and len(messages) == kernels, messages  # one warning per kernel


@needs_triton
def test_a_wrong_kernel_gives_wrong_results_without_the_guard():
    """The injected fault is real: without ``verify`` the wrong values reach the caller."""
    x = torch.randn(5, 7, device=DEVICE)
    with faults.inject("wrong_result", graph="inference"):
        compiled = torch.compile(_block, backend="ait")
        wrong = compiled(x)
    assert not torch.allclose(wrong, _block(x), atol=1e-3)


@needs_triton
def test_the_guard_retires_a_wrong_kernel(tmp_path, monkeypatch):
    x = torch.randn(5, 7, device=DEVICE, requires_grad=True)
    with faults.inject("wrong_result", kernel="kernel_0", graph="forward"):
        messages = _check_with_warnings(_block, x, options={"verify": True, "debug_dir": str(tmp_path)})
    assert len(messages) == 1, messages
    assert "verify" in messages[0] and "kernel_0" in messages[0] and "aten.cos.default" in messages[0]
    forward = [g for g in metrics.compiled_graphs if g.kind == "forward"][-1]
    backward = [g for g in metrics.compiled_graphs if g.kind == "backward"][-1]
    assert list(forward.verify_failures) == ["kernel_0"]
    assert backward.verified and not backward.verify_failures
    report = open(os.path.join(tmp_path, forward.name, "fusion_report.txt")).read()
    assert "1 differ and run through ATen" in report and "kernel_0: output" in report


@needs_triton
def test_the_guard_costs_nothing_after_the_first_call(monkeypatch):
    from ait_dynamo.verify import Verifier

    calls = []
    original = Verifier.reference
    monkeypatch.setattr(Verifier, "reference", lambda self, *a: calls.append(a[0]) or original(self, *a))
    x = torch.randn(8, 9, device=DEVICE)
    compiled = torch.compile(_block, backend="ait", options={"verify": True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            torch.testing.assert_close(compiled(x), _block(x))
    assert not _ait_warnings(caught)
    graph = metrics.compiled_graphs[-1]
    assert calls == graph.verified and len(calls) == len(set(graph.kernels)) >= 1  # first call only


@needs_triton
def test_the_guard_survives_a_wrong_integer_kernel():
    x = torch.randint(-5, 5, (4, 6), device=DEVICE)
    with faults.inject("wrong_result", graph="inference"):
        compiled = torch.compile(lambda t: (t * 3 + 1) // 2, backend="ait", options={"verify": True})
        with pytest.warns(RuntimeWarning, match="verify"):
            result = compiled(x)
    assert torch.equal(result, (x * 3 + 1) // 2)
    assert torch.equal(compiled(x), (x * 3 + 1) // 2)


def _cache_files(cache_dir) -> list[str]:
    return [os.path.join(root, name) for root, _, files in os.walk(cache_dir) for name in files if name.endswith(".py")]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_cache_file_is_regenerated(tmp_path, damage):
    cache_dir = str(tmp_path / "cache")
    x = torch.randn(6, 5, device=DEVICE, requires_grad=True)
    check_compiled(_block, x, options={"cache_dir": cache_dir})
    files = _cache_files(cache_dir)
    assert files
    originals = {path: open(path).read() for path in files}
    for path, text in originals.items():
        with open(path, "w") as file:
            file.write(text[: len(text) // 3] if damage == "truncated" else text.replace("tl.", "tl_", 3) + "\x00garbage")
    clear_memory_cache()
    messages = _check_with_warnings(_block, x, options={"cache_dir": cache_dir})
    assert len(messages) == len(originals), messages
    assert all("does not match its hash" in m for m in messages)
    assert {path: open(path).read() for path in files} == originals  # rewritten whole


def test_an_unwritable_cache_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    options = {"cache_dir": str(blocker / "cache")}
    x = torch.randn(3, 8, device=DEVICE, requires_grad=True)
    messages = _check_with_warnings(_block, x, options=options)
    assert len(messages) == 1 and "cannot write to" in messages[0] and "a_file" in messages[0], messages
    assert metrics.fallbacks == 0
    clear_memory_cache()
    assert _check_with_warnings(lambda t: t.sin() * 2, x, options=options) == []  # warned once


def test_out_of_memory_while_autotuning_uses_the_default_config(tmp_path):
    autotune.set_directory(str(tmp_path))
    launched = []
    candidates = [(1024, 4), (512, 4), (2048, 8)]
    with faults.inject("autotune_oom"):
        with pytest.warns(RuntimeWarning, match="out of memory while benchmarking"):
            choice = autotune.choose("feedbeef" * 3, (4096,), candidates, launched.append, device="test-device",
                                     bench=lambda fn: fn() or 1.0)
    assert choice == candidates[0]
    assert not os.listdir(tmp_path) or not any(f.endswith(".json") for f in os.listdir(tmp_path / "autotune"))


@pytest.mark.gpu
def test_out_of_memory_while_autotuning_a_graph(tmp_path):
    x = torch.randn(64, 300, device="cuda", requires_grad=True)
    with faults.inject("autotune_oom"):
        messages = _check_with_warnings(_block, x, options={"autotune": True, "cache_dir": str(tmp_path)})
    assert messages and all("out of memory while benchmarking" in m for m in messages), messages
    assert not runtime.BROKEN


def test_unknown_fault_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="valid kinds: compile, launch"):
        with faults.inject("segfault"):
            pass


# -- a layout the trace predicted wrongly (kernels/layout_guard.py) ---------------------------------


def _graph_with_a_mispredicted_layout(a: torch.Tensor, b: torch.Tensor) -> torch.fx.GraphModule:
    """``sin(a @ b) * 2`` whose trace says the product is column-major: what a meta function that
    disagrees with the real kernel (cuDNN's layout choice, an older torch) would record."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def program(x, y):
        return (torch.ops.aten.mul.Tensor(torch.ops.aten.sin.default(torch.ops.aten.mm.default(x, y)), 2.0),)

    gm = make_fx(program, tracing_mode="fake")(a, b)
    product = next(n for n in gm.graph.nodes if n.target is torch.ops.aten.mm.default)
    value = product.meta["val"]
    product.meta["val"] = value.new_empty_strided(value.shape, (1, value.shape[0]))
    return gm


@needs_triton
def test_a_layout_the_trace_mispredicted_is_copied_into_the_traced_one():
    from ait_dynamo import ait_compile

    a, b = torch.randn(6, 5, device=DEVICE), torch.randn(5, 7, device=DEVICE)
    expected = torch.sin(a @ b) * 2
    compiled = ait_compile(_graph_with_a_mispredicted_layout(a, b), [a, b])
    assert metrics.compiled_graphs[-1].kernels, "the pointwise work must run as a generated kernel"
    for call in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (result,) = compiled([a, b])
        torch.testing.assert_close(result, expected)
        messages = _ait_warnings(caught)
        assert len(messages) == (1 if call == 0 else 0), messages  # one warning, on the first call
        if call == 0:
            assert "aten.mm.default" in messages[0] and "(1, 6)" in messages[0]


@needs_triton
def test_layouts_are_checked_on_the_first_call_only(monkeypatch):
    from ait_dynamo.kernels.layout_guard import LayoutGuard

    checks = []
    original = LayoutGuard.expect
    monkeypatch.setattr(LayoutGuard, "expect", lambda self, *args: checks.append(args[3]) or original(self, *args))
    a, b = torch.randn(6, 5, device=DEVICE), torch.randn(5, 7, device=DEVICE)
    compiled = torch.compile(lambda x, y: torch.sin(x @ y) * 2, backend="ait")
    torch._dynamo.reset()
    for _ in range(3):
        torch.testing.assert_close(compiled(a, b), torch.sin(a @ b) * 2)
    assert checks == ["mm"], checks  # the product: checked on the first call, never again


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax((q @ k.transpose(-1, -2)) * 0.5, -1) @ v


def _attention_inputs() -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(2, 3, 80, 8, requires_grad=True) for _ in range(3))


def _injected(*args):
    raise RuntimeError("injected failure while AOTAutograd traces")


def test_a_rewritten_graph_that_fails_in_aot_autograd_compiles_as_given(monkeypatch):
    """The attention rewrite gave a graph AOTAutograd could not trace (SDPA with a 1-d mask):
    that raised out of ``torch.compile``. Now the graph Dynamo gave is compiled instead."""
    from ait_dynamo import backend

    rewrite = backend.rewrite_before_autograd

    def broken_rewrite(gm, example_inputs, config, passes, dump=None):
        rewritten, notes = rewrite(gm, example_inputs, config, passes, dump)
        assert rewritten is not gm, "the attention was not rewritten: the test checks nothing"
        first = next(n for n in rewritten.graph.nodes if n.op == "placeholder")
        with rewritten.graph.inserting_after(first):
            rewritten.graph.call_function(_injected, (first,))
        rewritten.recompile()
        return rewritten, notes

    monkeypatch.setattr(backend, "rewrite_before_autograd", broken_rewrite)
    metrics.reset()
    messages = _check_with_warnings(_attention, *_attention_inputs())
    assert len(messages) == 1 and "rewritten graph failed in AOTAutograd" in messages[0], messages
    assert "injected failure" in messages[0]
    assert metrics.graphs_compiled >= 1 and metrics.eager_graphs == 0
    assert any("rewrites dropped" in note for graph in metrics.compiled_graphs for note in graph.rewrites)


def test_a_graph_that_fails_in_aot_autograd_runs_in_eager(monkeypatch):
    from ait_dynamo import backend

    monkeypatch.setattr(backend, "_through_autograd", _injected)
    metrics.reset()
    messages = _check_with_warnings(_block, torch.randn(5, 7, requires_grad=True))
    assert len(messages) == 1 and "running it in eager" in messages[0] and "injected failure" in messages[0], messages
    assert metrics.eager_graphs == 1 and metrics.graphs_compiled == 0
