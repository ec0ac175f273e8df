"""Fusion micro-benchmarks: eager vs Inductor vs ait, side by side, in one run.

    python -m benchmarks.fusion_bench --out DIR [--quick] [--only softmax,tutorial] [--backends eager,inductor,ait]

Workloads (forward, and forward+backward where marked):
  pointwise_chain   a 12-op pointwise chain on 8192x8192 fp32 (fwd; fwd+bwd)
  softmax           (32768, 768) and (4096, 4096) in fp16 / bf16 / fp32, fwd+bwd
  layer_norm        same shapes and dtypes, fwd+bwd (affine)
  tutorial          cos(cos(a+b+c+d)) at 8192x8192 fp32, compiled fn then .sum().backward()
Per workload: median time (CUDA events), effective bandwidth from the bytes the fused kernels
must move, % of device-to-device copy bandwidth, cold compile time (fresh Triton / Inductor
caches: set before torch is imported), ait kernel count and max error against eager.
Prints a table and writes DIR/fusion_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

if __name__ == "__main__" or os.environ.get("AIT_BENCH_FRESH_CACHES"):
    # cold compile times: nobody may reuse kernels compiled by an earlier run
    _fresh = tempfile.mkdtemp(prefix="ait_fusion_bench_")
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(_fresh, "triton"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_fresh, "inductor"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")
    os.environ.setdefault("AIT_CACHE_DIR", os.path.join(_fresh, "ait"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


@dataclass
class Workload:
    name: str
    make_inputs: Callable[[], list[torch.Tensor]]
    fn: Callable[..., Any]
    backward: bool
    bytes_moved: int  # minimum bytes a fused implementation reads + writes per iteration
    tutorial_style: bool = False  # out.sum().backward() instead of out.backward(grad)


@dataclass
class Result:
    workload: str
    backend: str
    ms: float | None = None
    gbps: float | None = None
    copy_fraction: float | None = None
    compile_s: float | None = None
    kernels: int | None = None
    max_error: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def pointwise_chain(x: torch.Tensor) -> torch.Tensor:
    y = x * 1.5 + 0.5
    y = torch.sigmoid(y) * x
    y = torch.tanh(y) + x.exp() * 0.1
    y = torch.where(y > 0, y, y * 0.01)
    return (y * y + 1).rsqrt() - 0.5


def tutorial(a, b, c, d):
    x = a + b + c + d
    return x.cos().cos()


def _workloads(device: str, quick: bool) -> list[Workload]:
    big = (1024, 1024) if quick else (8192, 8192)
    row_shapes = [(512, 768), (256, 1024)] if quick else [(32768, 768), (4096, 4096)]
    dtypes = [torch.float16, torch.bfloat16, torch.float32]
    items: list[Workload] = []

    def tensor(shape, dtype=torch.float32, grad=True):
        return torch.randn(shape, device=device, dtype=dtype, requires_grad=grad)

    n = big[0] * big[1]
    items.append(Workload("pointwise_chain_fwd", lambda: [tensor(big, grad=False)], pointwise_chain, False, 2 * 4 * n))
    items.append(Workload("pointwise_chain_fwdbwd", lambda: [tensor(big)], pointwise_chain, True, 4 * 4 * n))
    for shape in row_shapes:
        for dtype in dtypes:
            size = shape[0] * shape[1] * torch.tensor([], dtype=dtype).element_size()
            tag = f"{shape[0]}x{shape[1]}_{str(dtype).split('.')[-1]}"
            items.append(
                Workload(f"softmax_{tag}", lambda s=shape, d=dtype: [tensor(s, d)], lambda x: torch.softmax(x, -1), True,
                         # fwd: read x, write y; bwd: read y, grad; write grad_x
                         5 * size)
            )
            items.append(
                Workload(
                    f"layer_norm_{tag}",
                    lambda s=shape, d=dtype: [tensor(s, d), tensor(s[1:], d), tensor(s[1:], d)],
                    lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b),
                    True,
                    5 * size,
                )
            )
    # fwd reads 4 and writes 2 (output, saved sum), the caller's sum reads 1, bwd reads 1 and writes 4
    items.append(Workload("tutorial_8192", lambda: [tensor(big) for _ in range(4)], tutorial, True, 12 * 4 * n, True))
    return items


def _compile(backend: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if backend == "eager":
        return fn
    if backend == "inductor":
        return torch.compile(fn)
    if backend == "ait":
        return torch.compile(fn, backend="ait")
    if backend == "ait_autotune":
        return torch.compile(fn, backend="ait", options={"autotune": True})
    raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


BACKENDS = ("eager", "inductor", "ait", "ait_autotune")


def _step(work: Workload, compiled: Callable[..., Any], inputs: list[torch.Tensor], grad: torch.Tensor | None) -> Any:
    for x in inputs:
        x.grad = None
    out = compiled(*inputs)
    if work.backward:
        if work.tutorial_style:
            out.sum().backward()
        else:
            out.backward(grad)
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(device: str, run: Callable[[], Any], iterations: int) -> float:
    """Median milliseconds of ``run``."""
    times = []
    for _ in range(iterations):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            run()
            times.append((time.perf_counter() - began) * 1e3)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth(device: str, quick: bool) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write), on a 256 MiB tensor."""
    numel = (1 << 22) if quick else (1 << 26)
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = _time(device, lambda: dst.copy_(src), 20)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def run_one(work: Workload, backend: str, device: str, iterations: int, copy_gbps: float) -> Result:
    from ait_dynamo import metrics

    result = Result(work.name, backend)
    torch._dynamo.reset()
    metrics.reset()
    torch.manual_seed(0)
    inputs = work.make_inputs()
    grad = None
    try:
        compiled = _compile(backend, work.fn)
        probe = work.fn(*inputs)
        if work.backward and not work.tutorial_style:
            grad = torch.randn_like(probe)
        expected = probe.detach().float()
        del probe
        _sync(device)
        began = time.perf_counter()
        out = _step(work, compiled, inputs, grad)
        _sync(device)
        result.compile_s = time.perf_counter() - began
        result.max_error = float((out.detach().float() - expected).abs().max()) if out.numel() else 0.0
        del out
        for _ in range(3):
            _step(work, compiled, inputs, grad)
        result.ms = _time(device, lambda: _step(work, compiled, inputs, grad), iterations)
        result.gbps = work.bytes_moved / result.ms / 1e6
        result.copy_fraction = result.gbps / copy_gbps if copy_gbps else None
        if backend.startswith("ait"):
            result.kernels = sum(len(g.kernels) for g in metrics.compiled_graphs)
            result.extra["externs"] = [e for g in metrics.compiled_graphs for e in g.externs]
            result.extra["fallbacks"] = [g.fallback_reason for g in metrics.compiled_graphs if g.fallback_reason]
            result.extra["graph_compile_s"] = [round(g.compile_seconds, 4) for g in metrics.compiled_graphs]
    except Exception as error:  # noqa: BLE001 - one failing backend must not hide the others
        result.error = f"{type(error).__name__}: {error}"[:500]
    return result


def _format(results: list[Result], copy_gbps: float) -> str:
    lines = [f"device-to-device copy: {copy_gbps:.0f} GB/s", ""]
    header = f"{'workload':34s} {'backend':9s} {'ms':>9s} {'GB/s':>8s} {'%copy':>6s} {'compile s':>9s} {'kern':>4s} {'max err':>9s}"
    lines += [header, "-" * len(header)]
    for r in results:
        if r.error:
            lines.append(f"{r.workload:34s} {r.backend:9s} ERROR {r.error[:80]}")
            continue
        lines.append(
            f"{r.workload:34s} {r.backend:9s} {r.ms:9.3f} {r.gbps:8.0f} {100 * (r.copy_fraction or 0):5.0f}% "
            f"{r.compile_s:9.2f} {'' if r.kernels is None else r.kernels:>4} {r.max_error:9.2e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for fusion_bench.json and fusion_bench.txt")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated substrings of workload names")
    parser.add_argument("--backends", default="eager,inductor,ait", help=f"comma-separated, from {', '.join(BACKENDS)}")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    os.makedirs(args.out, exist_ok=True)
    workloads = _workloads(args.device, args.quick)
    if args.only:
        wanted = [w for w in args.only.split(",") if w]
        workloads = [w for w in workloads if any(k in w.name for k in wanted)]
    copy_gbps = copy_bandwidth(args.device, args.quick)
    environment = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "command": " ".join([sys.executable, "-m", "benchmarks.fusion_bench", *(argv or sys.argv[1:])]),
        "copy_gbps": copy_gbps,
    }
    try:
        import triton

        environment["triton"] = triton.__version__
    except ImportError:
        pass
    results: list[Result] = []
    for work in workloads:
        for backend in backends:
            result = run_one(work, backend, args.device, args.iterations, copy_gbps)
            results.append(result)
            print(_format([result], copy_gbps).splitlines()[-1], flush=True)
            _write(args.out, environment, results, copy_gbps)  # partial results survive a timeout
    print()
    print(_format(results, copy_gbps))
    return 0


def _write(out: str, environment: dict[str, Any], results: list[Result], copy_gbps: float) -> None:
    with open(os.path.join(out, "fusion_bench.json"), "w") as file:
        json.dump({"environment": environment, "results": [asdict(r) for r in results]}, file, indent=1)
    with open(os.path.join(out, "fusion_bench.txt"), "w") as file:
        file.write(_format(results, copy_gbps) + "\n")


if __name__ == "__main__":
    sys.exit(main())
