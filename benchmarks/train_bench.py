"""Training-step benchmark: step time and peak memory of eager, Inductor and ait, and a sweep of
ait's memory budget.

    python -m benchmarks.train_bench --out DIR [--workload encoder_block,vit_b16] [--iters 20]
    python -m benchmarks.train_bench --out DIR --small --device cpu --modes eager,ait   # smoke test

One training step is forward + backward (parameter gradients, set to None before each step).
"Peak memory above inputs" is the CUDA allocator's peak during a step minus what was there before
the first step (parameters, inputs) and the output gradient: activations, gradients, workspace
and whatever a backend keeps between steps. It is given as allocated memory and as reserved
memory, which also counts a CUDA graph's private pool (see ``measure_step``). The budget sweep
runs ``--sweep-modes`` (default: ait with CUDA graphs, whose step time is not host noise).
Writes ``DIR/train_bench.json``, ``DIR/train_bench.md`` and ``DIR/budget_sweep.png``.

Workloads: the seed encoder block (768/12/3072, seq 196, batch 32, bf16) and ViT-B/16 (224x224,
patch 16, 12 layers, 768 dim, 12 heads, MLP 3072, 1000 classes, batch 64, bf16; defined below).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch._dynamo
from torch import nn
from torch.nn import functional as F

from benchmarks.models import EncoderBlock


class VitBlock(nn.Module):
    """Pre-norm transformer block of ViT: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT-B/16 by default: 16x16 patch embedding convolution, class token, learned positions."""

    def __init__(self, image: int = 224, patch: int = 16, dim: int = 768, depth: int = 12, heads: int = 12,
                 mlp_dim: int = 3072, classes: int = 1000):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[VitBlock(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@dataclass
class Workload:
    name: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]


def build_workload(name: str, device: torch.device, dtype: torch.dtype, small: bool) -> Workload:
    torch.manual_seed(0)
    if name == "encoder_block":
        batch, seq, dim, heads, ff = (4, 16, 64, 4, 256) if small else (32, 196, 768, 12, 3072)
        model = EncoderBlock(dim, heads, ff)
        inputs: tuple[torch.Tensor, ...] = (torch.randn(batch, seq, dim),)
    elif name == "vit_b16":
        if small:
            model = VisionTransformer(image=32, patch=16, dim=64, depth=2, heads=4, mlp_dim=256, classes=10)
            inputs = (torch.randn(2, 3, 32, 32),)
        else:
            model = VisionTransformer()
            inputs = (torch.randn(64, 3, 224, 224),)
    else:
        raise ValueError(f"unknown workload {name!r}; valid: encoder_block, vit_b16")
    model = model.to(device=device, dtype=dtype).train()
    return Workload(name, model, tuple(x.to(device=device, dtype=dtype) for x in inputs))


@dataclass
class Result:
    workload: str
    mode: str
    budget: str
    step_ms: float | None = None
    peak_mib: float | None = None  # allocated
    peak_reserved_mib: float | None = None
    saved_mib: float | None = None  # ait: bytes the partition saves for the backward
    compile_s: float | None = None
    error: str | None = None  # the exception, or ait_dynamo's warnings during the run


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_step(model: Callable[..., torch.Tensor], params: list[nn.Parameter], inputs: tuple[torch.Tensor, ...],
                 device: torch.device, iters: int) -> tuple[float, float, float, float]:
    """(compile + first step seconds, median step ms, peak allocated MiB, peak reserved MiB).

    Both peaks are above what was there before the first step (parameters, inputs) plus the output
    gradient, so memory a backend keeps between steps counts: CUDA-graph pools, static buffers,
    constants. Reserved memory also counts the free blocks of a CUDA graph's private pool, which
    nothing else can use (the allocator's cache of other free blocks is emptied before the step)."""
    grad_out: list[torch.Tensor] = []

    def step() -> None:
        for p in params:
            p.grad = None
        out = model(*inputs)
        if not grad_out:
            grad_out.append(torch.ones_like(out))
        out.backward(grad_out[0])

    base_allocated = base_reserved = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
        # cuBLAS keeps a workspace per handle (about 32 MiB each on the H200); a CUDA-graph capture
        # frees them and allocates its own. Every mode starts without them, so each pays its own.
        getattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: None)()
        torch.cuda.empty_cache()
        base_allocated, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    begin = time.perf_counter()
    step()
    _synchronize(device)
    compile_s = time.perf_counter() - begin
    for _ in range(3):  # CUDA-graph modes warm up on the first call and capture on the second
        step()
    for p in params:
        p.grad = None
    _synchronize(device)
    peak = peak_reserved = 0.0
    if device.type == "cuda":
        gradient_bytes = grad_out[0].untyped_storage().nbytes()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step()
        _synchronize(device)
        peak = (torch.cuda.max_memory_allocated() - base_allocated - gradient_bytes) / 2**20
        peak_reserved = (torch.cuda.max_memory_reserved() - base_reserved - gradient_bytes) / 2**20
        _print_graph_pools()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            samples.append((time.perf_counter() - t0) * 1e3)
    for p in params:
        p.grad = None
    return compile_s, statistics.median(samples), peak, peak_reserved


def _print_graph_pools() -> None:
    """The segments of CUDA-graph memory pools: how much they reserve and how much of it is in use
    between steps (the rest is free inside the pool, where only the graphs can use it)."""
    pools: dict[tuple, list[tuple[float, float]]] = {}
    for segment in torch.cuda.memory_snapshot():
        pool = tuple(segment.get("segment_pool_id", (0, 0)))
        if pool != (0, 0):
            pools.setdefault(pool, []).append((segment["total_size"] / 2**20, segment["allocated_size"] / 2**20))
    for pool, segments in pools.items():
        sizes = ", ".join(f"{total:.1f}/{used:.1f}" for total, used in sorted(segments, reverse=True))
        print(f"    graph pool {pool}: {sum(t for t, _ in segments):.1f} MiB reserved, "
              f"{sum(u for _, u in segments):.1f} MiB in use; segments (MiB reserved/in use): {sizes}", flush=True)


def run_mode(workload: Workload, mode: str, budget: str | None, device: torch.device, iters: int) -> Result:
    from ait_dynamo.partitioners import REPORTS

    result = Result(workload.name, mode, budget or "none")
    torch._dynamo.reset()
    REPORTS.clear()
    model = workload.model
    try:
        if mode == "eager":
            fn: Callable[..., torch.Tensor] = model
        elif mode == "inductor":
            fn = torch.compile(model)
        elif mode == "inductor-cudagraphs":
            fn = torch.compile(model, mode="reduce-overhead")
        elif mode.startswith("ait"):
            options: dict[str, Any] = {}
            if mode == "ait-cudagraphs":
                options["cuda_graphs"] = True
            elif mode == "ait-default-partition":
                options["partitioner"] = "default"
            elif mode == "ait-functorch-partition":
                options["partitioner"] = "functorch"
            if budget is not None:
                options["memory_budget"] = budget
            fn = torch.compile(model, backend="ait", options=options)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result.compile_s, result.step_ms, result.peak_mib, result.peak_reserved_mib = measure_step(
                fn, list(model.parameters()), workload.inputs, device, iters)
        # ait's own warnings (a graph falling back to ATen, the partitioner falling back to the
        # default partition, a budget that cannot be met) belong in the results
        notes = sorted({str(w.message)[:160] for w in caught if "ait_dynamo" in str(w.message)})
        result.error = "; ".join(notes) or None
        if REPORTS:
            result.saved_mib = sum(r.saved_bytes for r in REPORTS) / 2**20
    except Exception as error:  # noqa: BLE001 - one failing mode must not stop the others
        result.error = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    finally:
        # Free this mode's compiled code and CUDA-graph pools before the next mode measures its
        # baseline (pools freed later by the cyclic GC made later baselines wrong: negative peaks).
        torch._dynamo.reset()
        if device.type == "cuda":
            from torch._inductor import cudagraph_trees

            cudagraph_trees.reset_cudagraph_trees()
        fn = None  # noqa: F841 - drop the compiled module
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"  {result}", flush=True)
    return result


def _markdown(results: list[Result], header: str) -> str:
    lines = [header, "", "| workload | mode | memory budget | step ms | peak MiB above inputs (allocated) | "
             "peak MiB above inputs (reserved) | saved MiB | compile s | error or ait warnings |",
             "|---|---|---|---|---|---|---|---|---|"]

    def fmt(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for r in results:
        lines.append(f"| {r.workload} | {r.mode} | {r.budget} | {fmt(r.step_ms, 3)} | {fmt(r.peak_mib, 1)} | "
                     f"{fmt(r.peak_reserved_mib, 1)} | {fmt(r.saved_mib, 1)} | {fmt(r.compile_s, 1)} | {r.error or ''} |")
    return "\n".join(lines) + "\n"


def plot_sweep(results: list[Result], path: str) -> None:
    """Per workload: step time (left axis) and peak memory (right axis, reserved: it includes
    CUDA-graph pools) over the budget for every swept mode, with the baselines as flat lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [r for r in results if r.mode.endswith("-budget") and r.step_ms is not None]
    workloads = sorted({r.workload for r in swept})
    if not workloads:
        return
    fig, axes = plt.subplots(1, len(workloads), figsize=(7 * len(workloads), 5), squeeze=False)
    styles = ["o-", "s-", "^-", "d-"]
    for ax, name in zip(axes[0], workloads):
        twin = ax.twinx()
        modes = sorted({r.mode for r in swept if r.workload == name})
        for style, mode in zip(styles, modes):
            sweep = sorted((float(r.budget), r) for r in swept if r.workload == name and r.mode == mode)
            fractions = [f for f, _ in sweep]
            label = mode.removesuffix("-budget")
            ax.plot(fractions, [r.step_ms for _, r in sweep], style, color="tab:blue", label=f"{label}: step ms")
            twin.plot(fractions, [r.peak_reserved_mib for _, r in sweep], style.replace("-", "--"), color="tab:red",
                      label=f"{label}: peak MiB (reserved)")
            twin.plot(fractions, [r.saved_mib for _, r in sweep], style.replace("-", ":"), color="tab:orange",
                      label=f"{label}: saved MiB")
        for r in results:
            if r.workload == name and not r.mode.startswith("ait") and r.step_ms is not None:
                dash = {"eager": ":", "inductor": "-."}.get(r.mode, "--")
                ax.axhline(r.step_ms, color="tab:blue", alpha=0.35, linestyle=dash)
                twin.axhline(r.peak_reserved_mib, color="tab:red", alpha=0.35, linestyle=dash)
                ax.annotate(r.mode, (1.0, r.step_ms), fontsize=7, alpha=0.7)
        ax.set_xlabel("memory_budget (fraction of the default partition's saved bytes)")
        ax.set_ylabel("step time (ms)", color="tab:blue")
        twin.set_ylabel("MiB", color="tab:red")
        ax.invert_xaxis()
        ax.set_title(f"{name}: step time and memory over the budget (flat lines: baselines)")
        lines, more = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for train_bench.json/.md and budget_sweep.png")
    parser.add_argument("--workload", default="encoder_block,vit_b16")
    parser.add_argument("--modes", default="eager,inductor,inductor-cudagraphs,ait,ait-cudagraphs",
                        help="comma-separated: eager, inductor, inductor-cudagraphs (mode='reduce-overhead'), ait, "
                             "ait-cudagraphs (cuda_graphs=True), ait-default-partition, ait-functorch-partition")
    parser.add_argument("--sweep-modes", default="ait-cudagraphs",
                        help="comma-separated ait modes the budget sweep runs (ait, ait-cudagraphs)")
    parser.add_argument("--budgets", default="1.0,0.6,0.4,0.25,0.1",
                        help="memory_budget fractions for the ait sweep ('' for none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--small", action="store_true", help="tiny shapes (smoke test on a CPU)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    os.makedirs(args.out, exist_ok=True)
    header = (f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
              f"dtype {args.dtype}, {args.iters} timed steps (median)")
    print(header, flush=True)
    results: list[Result] = []

    def write_outputs() -> str:
        # Written after every measurement, so a run cut short still leaves its numbers.
        with open(os.path.join(args.out, "train_bench.json"), "w") as file:
            json.dump({"header": header, "results": [asdict(r) for r in results]}, file, indent=1)
        table = _markdown(results, header)
        with open(os.path.join(args.out, "train_bench.md"), "w") as file:
            file.write(table)
        return table

    for name in [w for w in args.workload.split(",") if w]:
        workload = build_workload(name, device, dtype, args.small)
        print(f"{name}:", flush=True)
        for mode in [m for m in args.modes.split(",") if m]:
            results.append(run_mode(workload, mode, None, device, args.iters))
            write_outputs()
        for sweep_mode in [m for m in args.sweep_modes.split(",") if m]:
            for budget in [b for b in args.budgets.split(",") if b]:
                result = run_mode(workload, sweep_mode, budget, device, args.iters)
                result.mode = f"{sweep_mode}-budget"
                results.append(result)
                write_outputs()
        del workload
        plot_sweep(results, os.path.join(args.out, "budget_sweep.png"))
    print(write_outputs())
    return 0


if __name__ == "__main__":
    sys.exit(main())
