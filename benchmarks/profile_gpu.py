"""Where the time and the memory go: per-kernel time, the tensors alive at the memory peak, and the
host's work, for each backend, in one run.

    python -m benchmarks profile --out DIR [--workload tutorial_8192x8192,encoder_block_train]
                                 [--backends eager,inductor,ait+memory_budget=0.5] [--memory] [--host]

(``python -m benchmarks.profile_gpu ...`` is the same command.) Any workload of the table
(``benchmarks/workloads.py``: seeds, models, fusion and micro cases; the first batch size of its
quick sweep unless ``--batch``) goes through the harness, checked against eager and float64 like
every benchmark, and is then profiled instead of timed: ``DIR/<workload>_<backend>.txt`` holds the
host enqueue time per step and ``measure.kernel_profile``'s rows (on CUDA the kernels, each once,
grouped into generated Triton, GEMM, attention, ATen; on a CPU the ATen ops by self time). With
``--memory`` (CUDA): the allocations alive at the allocator's peak during one step, largest first,
each with the Python frames that made it (ait's generated wrappers are written under
``DIR/ait_debug/<workload>`` so their line numbers can be read). With ``--host``: a cProfile of the
host work per step. ``DIR/profile.json`` records kernel and host time per step of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import cli, harness
from benchmarks.backends import BackendSpec
from benchmarks.measure import KernelRow, kernel_profile, synchronize
from benchmarks.recording import Record, Recorder, provenance
from benchmarks.workloads import WORKLOADS, Built

PROFILED_STEPS = 5
ROWS = 80
DEFAULT_WORKLOADS = "tutorial_8192x8192,layer_norm_32768x768_float16,encoder_block_train"
_GROUPS = (
    ("generated triton", ("kernel_", "triton_")),
    ("gemm", ("nvjet", "sm90_xmma", "cutlass", "ampere_", "sm80_", "gemm", "cublas", "aten::mm", "aten::addmm",
              "aten::bmm")),
    ("attention", ("cudnn_generated", "flash", "fmha", "cudnn::fusion", "pytorch_flash", "_efficient_attention",
                   "scaled_dot_product")),
    ("aten copy/fill", ("direct_copy", "FillFunctor", "copy_kernel", "Memcpy", "Memset", "aten::copy_", "aten::fill_")),
    ("aten reduce", ("reduce_kernel",)),
    ("aten elementwise", ("elementwise_kernel",)),
)


def kernel_group(name: str) -> str:
    for group, needles in _GROUPS:
        if any(needle in name for needle in needles):
            return group
    return "other"


def kernel_table(rows: list[KernelRow], host_ms: float, device: torch.device) -> str:
    groups: dict[str, float] = defaultdict(float)
    for row in rows:
        groups[kernel_group(row.name)] += row.ms
    what = "kernel" if device.type == "cuda" else "ATen op (self CPU time)"
    lines = [f"host enqueue per step: {host_ms:.3f} ms",
             f"{what} time per step: {sum(row.ms for row in rows):.3f} ms; by group (ms): "
             + ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(groups.items(), key=lambda item: -item[1])),
             f"{'us/step':>9s} {'calls/step':>10s}  {what}"]
    lines += [f"{row.ms * 1e3:9.1f} {row.calls:10.1f}  {row.name[:150]}" for row in rows[:ROWS]]
    return "\n".join(lines) + "\n"


def host_table(step: Any, device: torch.device, steps: int = 30) -> str:
    """Python-level profile of the host work per step (cProfile), by own time and by cumulative time."""
    import cProfile
    import io
    import pstats

    synchronize(device)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step.run(lambda: None)
    profiler.disable()
    synchronize(device)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(25)
    return f"host profile over {steps} steps\n" + text.getvalue()


def peak_table(step: Any, device: torch.device) -> str:
    """The allocations alive at the allocator's peak during one step, largest first (CUDA)."""
    synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.memory._record_memory_history(max_entries=500000, stacks="python")
    step.run(lambda: None)
    synchronize(device)
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


def _file_label(text: str) -> str:
    return text.replace("/", "-").replace("+", "_").replace("=", "")


class Profiler:
    """The harness's measurement for ``profile``: profile tables written to a file per case."""

    def __init__(self, out: Path, device: torch.device, memory: bool, host: bool):
        self.out, self.device, self.memory, self.host = out, device, memory, host

    def __call__(self, step: Any, record: Record, built: Built, spec: BackendSpec) -> None:
        for _ in range(3):  # warm-up: CUDA-graph modes warm up on the first call and capture on the second
            step.run(lambda: None)
        synchronize(self.device)
        began = time.perf_counter()
        for _ in range(PROFILED_STEPS):
            step.run(lambda: None)
        host_ms = (time.perf_counter() - began) * 1e3 / PROFILED_STEPS  # enqueue time per step
        rows = kernel_profile(step, self.device, PROFILED_STEPS)
        text = kernel_table(rows, host_ms, self.device)
        if self.memory and self.device.type == "cuda":
            text += "\n" + peak_table(step, self.device)
        if self.host:
            text += "\n" + host_table(step, self.device)
        path = self.out / f"{_file_label(record['workload'])}_{_file_label(spec.label)}.txt"
        path.write_text(text, encoding="utf-8")
        print(f"== {record['workload']} {spec.label}\n{text}", flush=True)
        record.update(host_ms=host_ms, kernel_ms=sum(row.ms for row in rows), profile=path.name,
                      top_kernels=[(row.name[:120], row.ms) for row in rows[:10]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_case_arguments(parser, timing=False)
    parser.add_argument("--memory", action="store_true", help="also the live allocations at the peak (CUDA)")
    parser.add_argument("--host", action="store_true", help="also a cProfile of the host work per step")
    parser.add_argument("--out", required=True, help="folder for the profile files and profile.json")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    defaults = DEFAULT_WORKLOADS.split(",")
    harness.resolve_case_arguments(args, parser, lambda device: defaults, lambda device: ["eager", "inductor", "ait"])


def execute(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(out / "profile.json", provenance(args.command_line, args.device, scale=args.scale))
    measure = Profiler(out, args.device, args.memory, args.host)
    failed = False
    for name in args.workloads:
        workload = WORKLOADS[name]
        # one batch size per workload (the first of its quick sweep) unless --batch names them
        batches = args.batches if args.batches and workload.batched else workload.batches_for(args.scale, "quick")[:1]
        # ait's generated modules of this workload under ait_debug/<workload>/, for the frames' line numbers
        debug_dir = str(out / "ait_debug" / _file_label(workload.name))
        specs = [replace(spec, options={**spec.options, "debug_dir": debug_dir}) if spec.backend.takes_options
                 else spec for spec in args.specs]
        runner = harness.CaseRunner(replace(harness.settings_from(args), specs=specs, kernel_time=False), measure=measure)
        for batch in batches:
            records = runner.run(workload, batch, measure_warm=False)
            for record in records:
                if record["status"] != "ok":
                    failed = True
                    harness.announce_problem(record)
            recorder.put(records)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.alias("profile", argv)


if __name__ == "__main__":
    sys.exit(main())
