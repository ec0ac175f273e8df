"""Generated wrapper modules: deterministic source, on-disk cache, debug dumps, fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import ait_compile, metrics
from ait_dynamo.cache import clear_memory_cache, module_path, source_key
from ait_dynamo.compile import compile_graph
from ait_dynamo.config import AitConfig


def _graph():
    def fn(x, y):
        a = torch.sin(x) + y
        b = torch.sin(x) + y  # duplicate: CSE merges it
        c = a * 1  # no-op: removed
        unused = torch.cos(y)  # noqa: F841 - dead: removed
        return c * b, a.sum()

    x, y = torch.randn(4, 3), torch.randn(4, 3)
    return make_fx(fn)(x, y), (x, y), fn


def _generated_sources(debug_dir):
    found = []
    for root, _, files in os.walk(debug_dir):
        found += [os.path.join(root, f) for f in files if f == "module.py"]
    return sorted(found)


def test_passes_and_generated_source(tmp_path):
    gm, inputs, fn = _graph()
    # fusion off: every op stays a countable extern call
    config = AitConfig.create(
        {"debug_dir": str(tmp_path / "dbg"), "cache_dir": str(tmp_path / "c"), "fusion": False}, environ={}
    )
    compiled = compile_graph(gm, inputs, config)
    torch.testing.assert_close(compiled(list(inputs)), fn(*inputs))
    record = metrics.compiled_graphs[-1]
    assert record.externs.count("aten.sin.default") == 1  # CSE
    assert "aten.cos.default" not in record.externs  # DCE
    assert record.externs.count("aten.mul.Tensor") == 1  # a * 1 removed
    folder = tmp_path / "dbg" / record.name
    names = sorted(os.listdir(folder))
    assert names == [
        "00-input.txt",
        "01-remove_noops.txt",
        "02-common_subexpression_elimination.txt",
        "03-fold_constants.txt",
        "04-move_casts_to_producers.txt",
        "05-pad_gemms.txt",
        "06-cutlass_gemms.txt",
        "07-onednn_gemms.txt",
        "08-cancel_negations.txt",
        "09-eliminate_dead_code.txt",
        "10-channels_last_layout.txt",
        "11-split_convolution_bias.txt",
        "12-drop_unused_pool_indices.txt",
        "13-remove_noops.txt",
        "14-split_training_batch_norm.txt",
        "15-split_training_batch_norm_backward.txt",
        "16-update_batch_norm_stats_in_place.txt",
        "17-recompute_broadcast_values.txt",
        "18-reinplace_dying_inputs.txt",
        "fusion_report.html",
        "fusion_report.txt",
        "module.py",
        "plan.txt",
    ]
    source = (folder / "module.py").read_text()
    assert "def make_call(constants):" in source and "args.clear()" in source
    assert "del " in source  # buffers are freed after their last use


def test_same_graph_same_source_and_cache_hit(tmp_path):
    config = AitConfig.create({"debug_dir": str(tmp_path / "dbg"), "cache_dir": str(tmp_path / "c")}, environ={})
    gm1, inputs, _ = _graph()
    gm2, _, _ = _graph()
    compile_graph(gm1, inputs, config)
    clear_memory_cache()
    compile_graph(gm2, inputs, config)
    first, second = _generated_sources(tmp_path / "dbg")
    assert open(first).read() == open(second).read()
    assert [g.cache_hit for g in metrics.compiled_graphs] == [False, True]
    assert metrics.cache_hits == 1


_SLOT_SCRIPT = textwrap.dedent(
    """
    import hashlib, torch
    from torch.fx.experimental.proxy_tensor import make_fx
    from ait_dynamo.config import AitConfig
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    def fn(x, y, w):
        a, b, c, d = torch.sin(x), torch.cos(x), torch.tanh(y), torch.exp(y)  # one kernel, four outputs
        z = torch.cat([a, b, c, d])  # through ATen (fallback_ops): all four die here
        return torch.relu(z[:8] * 2) @ w  # a kernel output of their layout takes one of their buffers

    gm = make_fx(fn, tracing_mode="fake")(torch.randn(8, 8), torch.randn(8, 8), torch.randn(8, 8))
    config = AitConfig.create({"fallback_ops": ["aten.cat"]}, environ={})
    work = run_passes(gm, config)
    plan, _ = build_plan(work, config)
    source = generate_wrapper(plan, work, "test", triton_runs_on=lambda device: True).source
    print(hashlib.sha256(source.encode()).hexdigest())
    print([line.strip() for line in source.splitlines()
           if line.strip().startswith("relu = ") and line.strip()[7:].isidentifier()][0])
    """
)


def test_same_graph_same_source_in_every_process():
    """Which dead buffer a kernel output takes over (``kernels/slots.py``) once followed the
    iteration order of a set of nodes, whose hashes are object addresses: the backward of a BERT
    training step generated a different module in each of three processes (so the on-disk cache
    never hit), and this graph two different ones in six. The buffers dying at one step now go
    in plan order, and the latest-made is taken."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the source is written as for a device that runs Triton
    runs = [subprocess.Popen([sys.executable, "-c", _SLOT_SCRIPT], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        outputs.append(out.split("\n")[:2])
    assert {digest for digest, _ in outputs} == {outputs[0][0]}, outputs
    assert outputs[0][1] == "relu = exp", outputs[0]  # the hand-over the test is about


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    config = AitConfig.create({"debug_dir": str(tmp_path / "dbg"), "cache_dir": str(tmp_path / "c")}, environ={})
    gm, inputs, fn = _graph()
    compile_graph(gm, inputs, config)
    source = open(_generated_sources(tmp_path / "dbg")[0]).read()
    path = module_path(str(tmp_path / "c"), source_key(source))
    with open(path, "w") as file:
        file.write(source[: len(source) // 2])  # truncated
    clear_memory_cache()
    gm2, _, _ = _graph()
    compiled = compile_graph(gm2, inputs, config)
    assert metrics.compiled_graphs[-1].cache_hit is False
    torch.testing.assert_close(compiled(list(inputs)), fn(*inputs))
    assert open(path).read() == source


def test_cache_hit_across_processes(tmp_path):
    script = textwrap.dedent(
        """
        import torch, ait_dynamo
        from ait_dynamo import metrics
        f = torch.compile(lambda x, y: (x.sin() * y).cos(), backend="ait")
        x = torch.randn(5, 4); y = torch.randn(5, 4)
        torch.testing.assert_close(f(x, y), (x.sin() * y).cos())
        print("HITS", metrics.cache_hits)
        """
    )
    env = dict(os.environ, AIT_CACHE_DIR=str(tmp_path / "shared_cache"))
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "HITS 0" in runs[0].stdout and "HITS 1" in runs[1].stdout


def test_ait_compile_in_aot_function_boxed():
    from functorch.compile import aot_function

    def fn(a, b):
        return (a * b).relu().sum(0)

    a = torch.randn(6, 5, requires_grad=True)
    b = torch.randn(6, 5, requires_grad=True)
    compiled = aot_function(fn, fw_compiler=ait_compile, bw_compiler=ait_compile)
    out = compiled(a, b)
    torch.testing.assert_close(out, fn(a, b))
    out.sum().backward()
    ga, gb = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    fn(a, b).sum().backward()
    torch.testing.assert_close(ga, a.grad)
    torch.testing.assert_close(gb, b.grad)
    assert [g.kind for g in metrics.compiled_graphs] == ["forward", "backward"]


def test_compile_failure_falls_back_with_one_warning(monkeypatch):
    import ait_dynamo.compile as driver

    def broken(*args, **kwargs):
        raise RuntimeError("template limit exceeded")

    monkeypatch.setattr(driver, "generate_wrapper", broken)
    fn = torch.compile(lambda x: torch.tanh(x) * 2, backend="ait")
    x = torch.randn(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(x)
    torch.testing.assert_close(out, torch.tanh(x) * 2)
    ours = [w for w in caught if "ait_dynamo" in str(w.message)]
    assert len(ours) == 1 and "template limit exceeded" in str(ours[0].message)
    assert metrics.fallbacks == 1


def test_graph_with_constants_and_symbolic_python_ops():
    def fn(x):
        return x * torch.tensor([1.0, 2.0, 3.0]) + x.shape[0] // 2

    compiled = torch.compile(fn, backend="ait", dynamic=True)
    for n in (2, 5):
        x = torch.randn(n, 3)
        torch.testing.assert_close(compiled(x), fn(x))
    assert metrics.fallbacks == 0


def test_entry_point_in_a_fresh_interpreter():
    script = textwrap.dedent(
        """
        import sys, torch
        assert "ait" in torch._dynamo.list_backends(), torch._dynamo.list_backends()
        assert "ait_dynamo" not in sys.modules
        m = torch.nn.Linear(4, 2)
        x = torch.randn(3, 4)
        torch.testing.assert_close(torch.compile(m, backend="ait")(x), m(x))
        assert "ait_dynamo" in sys.modules
        from ait_dynamo import metrics
        assert metrics.graphs_compiled >= 1 and metrics.fallbacks == 0
        print("OK")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd="/")
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout


@pytest.mark.parametrize("partitioner", ["min_cut", "default"])
def test_partitioner_option(partitioner):
    fn = torch.compile(lambda a: a.cos().cos(), backend="ait", options={"partitioner": partitioner})
    a = torch.randn(5, requires_grad=True)
    fn(a).sum().backward()
    expected = (torch.sin(a.cos()) * torch.sin(a)).detach()
    torch.testing.assert_close(a.grad, expected)


def test_extern_entry_points_are_public_functions_that_can_only_run_the_default_overload():
    """The wrapper calls these ops through their public ``torch`` function (cheaper than the
    operator handle: on the H200 a depthwise convolution cost 11.9 us of host time through
    ``torch.convolution`` and 17.8 us through ``_op``): that is only the same call when the
    function is ATen's generated binding and the op has no overload it could pick instead of
    ``default``."""
    from ait_dynamo.kernels.source import ENTRY_POINTS

    def positional(schema, required_only):
        return [a for a in schema.arguments if not a.kwarg_only and not (required_only and a.has_default_value())]

    assert torch.ops.aten.convolution.default in ENTRY_POINTS
    for op, source in ENTRY_POINTS.items():
        name = source.removeprefix("torch.")
        assert getattr(torch, name) is getattr(torch._C._VariableFunctions, name), source
        packet = op._overloadpacket
        for overload in set(packet.overloads()) - {"default", "out"}:
            # e.g. mm.dtype: it needs an argument more than a call of ``default`` gives; cat.names
            # takes a dimension name, which no traced graph holds
            other = getattr(packet, overload)._schema
            needs_more = len(positional(other, True)) > len(positional(op._schema, False))
            assert overload.startswith("names") or needs_more, (op, overload)
    x, w = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3)
    args = (x, w, None, [1, 2], [1, 0], [1, 1], False, [0, 0], 1)
    assert torch.equal(torch.convolution(*args), torch.ops.aten.convolution.default(*args))
