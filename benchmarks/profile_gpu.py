"""Where the time and the memory go: per-kernel GPU time and the live tensors at the memory peak,
for eager, Inductor and ait, in one run.

    python -m benchmarks.profile_gpu --out DIR [--only tutorial,layer_norm,encoder_block] [--memory]

For each workload and backend: ``DIR/<workload>_<backend>_kernels.txt`` (torch.profiler, CUDA
kernels sorted by total time over the profiled steps, with the per-step host time). With
``--memory`` and a training workload: ``DIR/<workload>_<backend>_peak.txt``, the allocations alive
at the allocator's peak during one step, largest first, each with the Python frames that made it
(ait's generated wrappers are written under ``DIR/ait_debug`` so their line numbers can be read).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from typing import Any, Callable

import torch

from benchmarks import fusion_bench, train_bench

PROFILED_STEPS = 5


def _compile(backend: str, fn: Callable[..., Any], debug_dir: str) -> Callable[..., Any]:
    if backend == "eager":
        return fn
    if backend == "inductor":
        return torch.compile(fn)
    # "ait+memory_budget=0.5+cuda_graphs=1": ait with those options
    name, *settings = backend.split("+")
    if name != "ait":
        raise ValueError(f"unknown backend {backend!r}; valid: eager, inductor, ait[+option=value...]")
    options: dict[str, Any] = {"debug_dir": debug_dir}
    options.update(setting.split("=", 1) for setting in settings)
    return torch.compile(fn, backend="ait", options=options)


def _steps() -> dict[str, Callable[[str, str], tuple[Callable[[], Any], list[torch.Tensor]]]]:
    """workload → (backend, debug_dir) → (one step, tensors whose grads to clear)."""

    def fusion_workload(name: str):
        def build(backend: str, debug_dir: str):
            work = next(w for w in fusion_bench._workloads("cuda", False) if w.name == name)
            inputs = work.make_inputs()
            compiled = _compile(backend, work.fn, debug_dir)
            grad = None if work.tutorial_style else torch.randn_like(work.fn(*inputs))
            return (lambda: fusion_bench._step(work, compiled, inputs, grad)), inputs

        return build

    def train_workload(name: str):
        def build(backend: str, debug_dir: str):
            work = train_bench.build_workload(name, torch.device("cuda"), torch.bfloat16, False)
            compiled = _compile(backend, work.model, debug_dir)
            grad: list[torch.Tensor] = []

            def step() -> None:
                out = compiled(*work.inputs)
                if not grad:
                    grad.append(torch.ones_like(out))
                out.backward(grad[0])

            return step, list(work.model.parameters())

        return build

    names = ["tutorial_8192", "layer_norm_32768x768_float16", "softmax_32768x768_float16",
             "layer_norm_4096x4096_float32", "pointwise_chain_fwd", "pointwise_chain_fwdbwd"]
    table = {n: fusion_workload(n) for n in names}
    table["encoder_block"] = train_workload("encoder_block")
    table["vit_b16"] = train_workload("vit_b16")
    return table


def kernel_table(step: Callable[[], Any], params: list[torch.Tensor]) -> str:
    from torch.profiler import ProfilerActivity, profile

    def run() -> None:
        for p in params:
            p.grad = None
        step()

    for _ in range(3):
        run()
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(PROFILED_STEPS):
        run()
    host_ms = (time.perf_counter() - began) * 1e3 / PROFILED_STEPS  # enqueue time per step
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_STEPS):
            run()
        torch.cuda.synchronize()
    rows = []
    total = 0.0
    kernels: dict[str, float] = {}
    for e in prof.key_averages():
        gpu = getattr(e, "self_device_time_total", None)
        if gpu is None:
            gpu = e.self_cuda_time_total
        if gpu <= 0:
            continue
        total += gpu
        rows.append((gpu, e.count, e.key))
        if e.device_type == torch.autograd.DeviceType.CUDA and e.key not in kernels:  # a kernel, once
            kernels[e.key] = gpu
    rows.sort(reverse=True)
    # ``total`` sums every row with device time: a kernel also under the ATen op that launched it,
    # the ranges around compiled regions, Inductor's named kernels twice. The kernel rows alone
    # (device-side events, each name once) add up without double counting.
    groups: dict[str, float] = {}
    for key, gpu in kernels.items():
        groups[_kernel_group(key)] = groups.get(_kernel_group(key), 0.0) + gpu
    lines = [f"host enqueue per step: {host_ms:.3f} ms; device time of all rows per step (double counts): "
             f"{total / 1e3 / PROFILED_STEPS:.3f} ms",
             f"kernel time per step: {sum(kernels.values()) / 1e3 / PROFILED_STEPS:.3f} ms; by group (ms): "
             + ", ".join(f"{name} {gpu / 1e3 / PROFILED_STEPS:.3f}" for name, gpu in
                         sorted(groups.items(), key=lambda item: -item[1])),
             f"{'us/step':>9s} {'calls/step':>10s}  kernel"]
    for gpu, count, key in rows[:ROWS]:
        lines.append(f"{gpu / PROFILED_STEPS:9.1f} {count / PROFILED_STEPS:10.1f}  {key[:150]}")
    return "\n".join(lines) + "\n"


ROWS = 80
_GROUPS = (
    ("generated triton", ("kernel_", "triton_")),
    ("gemm", ("nvjet", "sm90_xmma", "cutlass", "ampere_", "sm80_", "gemm", "cublas")),
    ("attention", ("cudnn_generated", "flash", "fmha", "cudnn::fusion", "pytorch_flash", "_efficient_attention")),
    ("aten copy/fill", ("direct_copy", "FillFunctor", "copy_kernel", "Memcpy", "Memset")),
    ("aten reduce", ("reduce_kernel",)),
    ("aten elementwise", ("elementwise_kernel",)),
)


def _kernel_group(name: str) -> str:
    for group, needles in _GROUPS:
        if any(needle in name for needle in needles):
            return group
    return "other"


def host_table(step: Callable[[], Any], params: list[torch.Tensor], steps: int = 30) -> str:
    """Python-level profile of the host work per step (cProfile), by own time."""
    import cProfile
    import io
    import pstats

    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        for p in params:
            p.grad = None
        step()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return f"host profile over {steps} steps\n" + text.getvalue()


def peak_table(step: Callable[[], Any], params: list[torch.Tensor]) -> str:
    """The allocations alive at the allocator's peak during one step, largest first."""
    for _ in range(2):
        for p in params:
            p.grad = None
        step()
    for p in params:
        p.grad = None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=500000, stacks="python")
    step()
    torch.cuda.synchronize()
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    live: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    current = peak = 0
    peak_live: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    for trace in snapshot["device_traces"]:
        for event in trace:
            action, addr, size = event["action"], event["addr"], event["size"]
            if action == "alloc":
                live[addr] = (size, event.get("frames", []))
                current += size
                if current > peak:
                    peak = current
                    peak_live = dict(live)
            elif action == "free_completed" and addr in live:
                current -= live.pop(addr)[0]
    grouped: dict[str, list[int]] = defaultdict(list)
    for size, frames in peak_live.values():
        useful = [f for f in frames if "torch/" not in f["filename"] or "generated" in f["filename"]][:3]
        where = " <- ".join(f"{os.path.basename(f['filename'])}:{f['line']} {f['name']}" for f in useful) or "?"
        grouped[where].append(size)
    lines = [f"allocated before the step: {base / 2**20:.1f} MiB; peak of the step's own allocations: "
             f"{peak / 2**20:.1f} MiB in {len(peak_live)} blocks"]
    for where, sizes in sorted(grouped.items(), key=lambda item: -sum(item[1])):
        lines.append(f"{sum(sizes) / 2**20:9.1f} MiB {len(sizes):4d} blocks  {where[:300]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="tutorial_8192,layer_norm_32768x768_float16,encoder_block")
    parser.add_argument("--backends", default="eager,inductor,ait",
                        help="comma-separated: eager, inductor, ait; ait+option=value+... passes ait options")
    parser.add_argument("--memory", action="store_true", help="also the live allocations at the peak (training)")
    parser.add_argument("--host", action="store_true", help="also a cProfile of the host work per step")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    table = _steps()
    for name in [n for n in args.only.split(",") if n]:
        for backend in [b for b in args.backends.split(",") if b]:
            torch._dynamo.reset()
            torch.manual_seed(0)
            step = params = None
            try:
                step, params = table[name](backend, os.path.join(args.out, "ait_debug", name))
                report = kernel_table(step, params)
                if args.memory and name in ("encoder_block", "vit_b16"):
                    report += "\n" + peak_table(step, params)
                if args.host:
                    report += "\n" + host_table(step, params)
            except Exception as error:  # noqa: BLE001 - one failure must not hide the rest
                report = f"ERROR {type(error).__name__}: {error}\n"
            label = backend.replace("+", "_").replace("=", "")
            with open(os.path.join(args.out, f"{name}_{label}.txt"), "w") as file:
                file.write(report)
            print(f"== {name} {backend}\n{report}", flush=True)
            del step, params
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
