"""Host time of one kernel launch, one buffer allocation, one view and one extern GEMM on CUDA, in
each form the generated wrapper could write it (issue 12: kernels/launch_site.py,
kernels/source.py). A tiny kernel (the GPU finishes it faster than the host issues the next), best
of 5 repeats of 20,000 calls each, the queue drained between repeats. From the repository root on
the GPU machine:

    python3 benchmarks/results/nvidia-h200/host_calls/host_calls.py
"""

import platform
import time
from typing import Callable

import torch
import triton
import triton.language as tl


@triton.jit
def _add(a_ptr, b_ptr, c_ptr, out_ptr, xnumel, XBLOCK: tl.constexpr):
    index = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    mask = index < xnumel
    a = tl.load(a_ptr + index, mask)
    b = tl.load(b_ptr + index, mask)
    c = tl.load(c_ptr + index, mask)
    tl.store(out_ptr + index, a + b * c, mask)


def per_call_us(fn: Callable[[], object], number: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - begin)
    torch.cuda.synchronize()
    return best / number * 1e6


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"Python {platform.python_version()}")
    device = torch.device("cuda", 0)
    n = 1024
    a, b, c, out = (torch.randn(n, device=device) for _ in range(4))
    compiled = _add[(1,)](a, b, c, out, n, XBLOCK=1024)
    launcher = compiled.run
    stream_of = torch._C._cuda_getCurrentRawStream
    stream = stream_of(0)
    metadata = compiled.packed_metadata
    function = compiled.function
    hooks = triton.knobs.runtime
    rows: dict[str, Callable[[], object]] = {}
    rows["triton JIT: kernel[grid](...)"] = lambda: _add[(1,)](a, b, c, out, n, XBLOCK=1024)
    rows["CompiledKernel.run (ait today, without its checks)"] = lambda: launcher(
        1, 1, 1, stream_of(0), function, metadata, None, None, None, a, b, c, out, n, 1024)

    def ait_direct() -> None:  # kernels/launch_site.py's direct(): the hook test, then run
        enter_hook = hooks.launch_enter_hook
        if enter_hook is not None and getattr(enter_hook, "calls", True):
            raise RuntimeError("a launch hook is set")
        launcher(1, 1, 1, stream_of(0), function, metadata, None, None, None, a, b, c, out, n, 1024)

    rows["ait direct() today"] = ait_direct
    launch = getattr(launcher, "launch", None)
    coop, pdl = getattr(launcher, "launch_cooperative_grid", False), getattr(launcher, "launch_pdl", False)
    if launch is not None and not hasattr(launcher, "arg_annotations"):  # Triton 3.4-3.6 launcher modules
        rows["launcher module, tensors"] = lambda: launch(
            1, 1, 1, stream_of(0), function, coop, pdl, None, None, metadata, None, None, None, a, b, c, out, n, 1024)
        check = torch.empty_like(out)
        launch(1, 1, 1, stream, function, coop, pdl, None, None, metadata, None, None, None, a, b, c, check, n, 1024)
        _add[(1,)](a, b, c, out, n, XBLOCK=1024)
        torch.cuda.synchronize()
        print(f"launcher module result equals the JIT's: {torch.equal(check, out)}")
        rows["launcher module, addresses"] = lambda: launch(
            1, 1, 1, stream_of(0), function, coop, pdl, None, None, metadata, None, None, None,
            a.data_ptr(), b.data_ptr(), c.data_ptr(), out.data_ptr(), n, 1024)
    static = getattr(torch._C, "_StaticCudaLauncher", None)
    if static is not None:
        scratch = sum(hasattr(compiled.metadata, f) for f in ("global_scratch_size", "profile_scratch_size"))
        types = "OOOOi" + "O" * scratch
        tail = (None,) * scratch
        warps, shared = compiled.metadata.num_warps, compiled.metadata.shared
        run_static = static._launch_kernel
        rows["torch static launcher, tensors"] = lambda: run_static(
            function, 1, 1, 1, warps, shared, types, (a, b, c, out, n, *tail), stream_of(0))
        rows["torch static launcher, tensors, stream bound"] = lambda: run_static(
            function, 1, 1, 1, warps, shared, types, (a, b, c, out, n, *tail), stream)
        check = torch.empty_like(out)
        run_static(function, 1, 1, 1, warps, shared, types, (a, b, c, check, n, *tail), stream)
        _add[(1,)](a, b, c, out, n, XBLOCK=1024)
        torch.cuda.synchronize()
        print(f"static launcher result equals the JIT's: {torch.equal(check, out)}")
    rows["torch._C._cuda_getCurrentRawStream(0)"] = lambda: stream_of(0)

    size, stride = (8, 128, 768), (98304, 768, 1)
    x = torch.empty(size, device=device, dtype=torch.float16)
    rows["torch.empty_strided(..., device=x.device)"] = lambda: torch.empty_strided(
        size, stride, dtype=torch.float16, device=x.device)
    rows["torch.empty_strided(..., device=bound)"] = lambda: torch.empty_strided(
        size, stride, dtype=torch.float16, device=device)
    empty_cuda = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
    empty_cuda = getattr(empty_cuda, "_empty_strided_cuda", None)
    if empty_cuda is not None:
        rows["torch._C._dynamo.guards._empty_strided_cuda"] = lambda: empty_cuda(size, stride, torch.float16)
    rows["x.view(1024, 768)"] = lambda: x.view(1024, 768)
    rows["x.view((1024, 768))"] = lambda: x.view((1024, 768))
    rows["torch.as_strided(x, size, stride, 0)"] = lambda: torch.as_strided(x, (1024, 768), (768, 1), 0)
    rows["x.t()-like x.permute(0, 2, 1)"] = lambda: x.permute(0, 2, 1)
    reinterpret = getattr(torch._C._dynamo.guards, "_reinterpret_tensor", None) if hasattr(torch._C, "_dynamo") else None
    if reinterpret is not None:
        rows["torch._C._dynamo.guards._reinterpret_tensor"] = lambda: reinterpret(x, (1024, 768), (768, 1), 0)
    m1 = torch.randn(64, 64, device=device, dtype=torch.float16)
    m2 = torch.randn(64, 64, device=device, dtype=torch.float16)
    buf = torch.empty(64, 64, device=device, dtype=torch.float16)
    mm_overload = torch.ops.aten.mm.default
    rows["torch.mm(a, b)"] = lambda: torch.mm(m1, m2)
    rows["torch.mm(a, b, out=buf)"] = lambda: torch.mm(m1, m2, out=buf)
    rows["torch.ops.aten.mm.default(a, b)"] = lambda: mm_overload(m1, m2)
    for name, fn in rows.items():
        fn()
        print(f"{per_call_us(fn):7.2f} us  {name}")


if __name__ == "__main__":
    main()
