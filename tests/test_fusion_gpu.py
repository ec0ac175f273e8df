"""GPU-only checks of generated kernels at sizes the CPU interpreter cannot afford."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo import metrics
from utils import check_compiled

pytestmark = pytest.mark.gpu


def test_int64_indexing_on_device():
    n = 2**31 + 4099  # past int32 offsets
    x = torch.zeros(n, dtype=torch.int8, device="cuda")
    x[-3:] = 7
    out = torch.compile(lambda t: t + 1, backend="ait")(x)
    assert metrics.compiled_graphs[-1].kernels
    assert out[-3:].tolist() == [8, 8, 8] and int(out[0]) == 1 and int(out[n // 2]) == 1
    del x, out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(32768, 768), (4096, 4096), (64, 20000)], ids=str)
def test_row_kernels_at_benchmark_sizes(shape, dtype):
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(shape[-1], device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(shape[-1], device="cuda", dtype=dtype, requires_grad=True)
    check_compiled(lambda t: torch.softmax(t, -1), x)
    assert [len(g.kernels) for g in metrics.compiled_graphs] == [1, 1]
    metrics.reset()
    check_compiled(lambda t, weight, bias: F.layer_norm(t, t.shape[-1:], weight, bias), x, w, b)
    assert len(metrics.compiled_graphs[0].kernels) == 1


def test_tutorial_at_benchmark_size():
    inputs = [torch.randn(8192, 8192, device="cuda", requires_grad=True) for _ in range(4)]

    def fn(a, b, c, d):
        return (a + b + c + d).cos().cos()

    check_compiled(fn, *inputs)
    assert [len(g.kernels) for g in metrics.compiled_graphs] == [1, 1]


def test_dropout_on_device():
    compiled = torch.compile(lambda t: F.dropout(t, 0.2, training=True), backend="ait", options={"fallback_random": False})
    out = compiled(torch.ones(4096, 1000, device="cuda"))
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.8) < 0.01
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / 0.8))


def test_outputs_are_allocated_on_the_graphs_device_whichever_device_is_current(monkeypatch):
    """The wrapper allocates through ``_empty_strided_cuda`` (the current device) after one
    device test per call; where another device is current it allocates on the graph's own."""
    from ait_dynamo.kernels import runtime

    x = torch.randn(300, 7, device="cuda")
    fn = torch.compile(lambda t: (t * 2 + 1).relu(), backend="ait")
    torch.testing.assert_close(fn(x), (x * 2 + 1).relu())
    monkeypatch.setattr(runtime, "current_cuda_device", lambda: -1)  # "another device is current"
    out = fn(x)
    torch.testing.assert_close(out, (x * 2 + 1).relu())
    assert out.device == x.device


def test_the_direct_path_calls_the_c_launch_function_under_the_triton_it_was_read_from():
    """Under Triton 3.6 a bound site calls the C launch function under ``compiled.run``
    (``runtime.bare_launcher``): the structure it relies on must still be there."""
    import gc

    import triton

    from ait_dynamo.kernels import launch_site, runtime

    if not triton.__version__.startswith(runtime.BARE_LAUNCHER_VERSIONS):
        pytest.skip(f"Triton {triton.__version__}: launches go through compiled.run")
    def bound_sites() -> list:
        return [site for site in gc.get_objects() if type(site) is launch_site.LaunchSite and site.bound is not None]

    before = {id(site) for site in bound_sites()}
    x = torch.randn(4096, device="cuda")
    fn = torch.compile(lambda t: t.sin() * 3, backend="ait")
    for _ in range(3):
        torch.testing.assert_close(fn(x), x.sin() * 3)
    new = [site for site in bound_sites() if id(site) not in before]
    assert new and all(runtime.bare_launcher(site.bound.compiled) is not None for site in new)


def test_direct_launches_respecialize_on_alignment_and_sizes():
    """After its first launch a kernel is called through its compiled launcher, keyed by what
    Triton specializes on: a misaligned input (a view at an odd offset) or a size of 1 must get
    its own compiled kernel, not the aligned one's (which assumes 16-byte aligned vector loads)."""
    from ait_dynamo.kernels import runtime

    fn = torch.compile(lambda t: t * 2 + 1, backend="ait", dynamic=True)
    base = torch.randn(4 * 4096 + 1, device="cuda")
    for x in (base[:4096], base[:4096], base[1:4097], base[3:3 + 4096], base[:1], base[:4097]):
        torch.testing.assert_close(fn(x), x * 2 + 1)
    assert runtime._DIRECT["on"], "the direct launch path turned itself off"
    assert runtime._COMPILED, "no launch went through the direct path"
