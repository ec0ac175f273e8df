"""Where the time and the memory go: per-kernel time, the tensors alive at the memory peak, and the
host's work, for each backend, in one run.

    python -m benchmarks profile --out DIR [--workload tutorial_8192x8192,encoder_block_train]
                                 [--backends eager,inductor,ait+memory_budget=0.5] [--memory] [--host]
                                 [--timeline] [--lines]

(``python -m benchmarks.profile_gpu ...`` is the same command.) Any workload of the table
(``benchmarks/workloads.py``: seeds, models, fusion and micro cases; the first batch size of its
quick sweep unless ``--batch``) goes through the harness, checked against eager and float64 like
every benchmark, and is then profiled instead of timed: ``DIR/<workload>_<backend>.txt`` holds the
host enqueue time per step and ``measure.kernel_profile``'s rows (on CUDA the kernels, each once,
grouped into generated Triton, GEMM, attention, ATen; on a CPU the ATen ops by self time). With
``--memory`` (CUDA): the allocations alive at the allocator's peak during one step, largest first,
each with the Python frames that made it (ait's generated wrappers are written under
``DIR/ait_debug/<workload>`` so their line numbers can be read). With ``--host``: a cProfile of the
host work per step. With ``--timeline``: a torch.profiler trace of CPU and GPU over a few steps,
``DIR/<workload>_<backend>_trace.json.gz`` (chrome://tracing or Perfetto), summarised in the text
file by host op and CUDA runtime call (a device synchronisation or a copy to the host inside a
step shows here: it makes the host wait for the GPU, so the step costs host time plus kernel
time instead of the larger of the two). With ``--lines``: the host time of each line of ait's
and Inductor's generated wrappers, clocked without a profiler (``benchmarks/wrapper_lines.py``;
the wrappers in this run are the instrumented ones, about 0.1 us more per line).
``DIR/profile.json`` records kernel and host time per step of each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import cli, harness, wrapper_lines
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


TIMELINE_STEPS = 3


def timeline_table(step: Any, device: torch.device, trace_path: Path) -> str:
    """CPU and GPU activity over a few steps (torch.profiler): the trace written to ``trace_path``
    and the host ops and CUDA runtime calls by self time per step, after the wall time of the
    profiled steps (with the profiler's own cost in it)."""
    import gzip
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        began = time.perf_counter()
        for _ in range(TIMELINE_STEPS):
            step.run(lambda: None)
        synchronize(device)
        wall_ms = (time.perf_counter() - began) * 1e3 / TIMELINE_STEPS
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "trace.json"
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as source, gzip.open(trace_path, "wb") as target:
            target.write(source.read())
    averages = prof.key_averages()
    runtime_calls = sorted((e for e in averages if e.key.startswith(("cuda", "cu")) and e.device_type.name == "CPU"),
                           key=lambda e: -e.self_cpu_time_total)
    lines = [f"timeline over {TIMELINE_STEPS} steps (profiler on): {wall_ms:.3f} ms per step; trace {trace_path.name}",
             "CUDA runtime calls per step (calls, self us):"]
    lines += [f"  {e.count / TIMELINE_STEPS:8.1f} {e.self_cpu_time_total / TIMELINE_STEPS:10.1f}  {e.key}"
              for e in runtime_calls[:15]]
    lines.append("host ops by self CPU time (totals over the steps):")
    lines.append(averages.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70))
    return "\n".join(lines) + "\n"


MEMORY_EVENTS = 2_000_000  # the allocator's history kept with --memory: a whole run's allocations and frees


def record_memory_history(enabled: bool) -> None:
    """With ``--memory``, the allocator keeps every allocation's Python frames from the start of
    the run: those of what is alive before the step too (weights, optimizer state, a backend's
    scratch), for :func:`peak_table`'s base."""
    if enabled:
        torch.cuda.memory._record_memory_history(max_entries=MEMORY_EVENTS, stacks="python")
    else:
        torch.cuda.memory._record_memory_history(enabled=None)


def _where(frames: list[dict[str, Any]]) -> str:
    useful = [f for f in frames if "torch/" not in f["filename"] or "generated" in f["filename"]][:3]
    return " <- ".join(f"{os.path.basename(f['filename'])}:{f['line']} {f['name']}" for f in useful) or "?"


def _grouped(blocks: list[tuple[int, list[dict[str, Any]]]]) -> list[str]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for size, frames in blocks:
        grouped[_where(frames)].append(size)
    return [f"{sum(sizes) / 2**20:9.1f} MiB {len(sizes):4d} blocks  {where[:300]}"
            for where, sizes in sorted(grouped.items(), key=lambda item: -sum(item[1]))]


def peak_table(step: Any, device: torch.device) -> str:
    """The allocations alive before one step, then those alive at the allocator's peak during it,
    largest first, each with the frames that made it (CUDA, history recorded since the start)."""
    synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    before = torch.cuda.memory._snapshot()
    index = device.index if device.index is not None else torch.cuda.current_device()
    events_before = len(before["device_traces"][index])
    step.run(lambda: None)
    synchronize(device)
    events = torch.cuda.memory._snapshot()["device_traces"][index]
    if len(events) >= MEMORY_EVENTS:
        return "the allocator's history overflowed: no peak table\n"
    live: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    current = peak = 0
    peak_live: dict[int, tuple[int, list[dict[str, Any]]]] = {}
    for event in events[events_before:]:
        action, addr, size = event["action"], event["addr"], event["size"]
        if action == "alloc":
            live[addr] = (size, event.get("frames", []))
            current += size
            if current > peak:
                peak = current
                peak_live = dict(live)
        elif action == "free_completed" and addr in live:
            current -= live.pop(addr)[0]
    alive_before = [(block["size"], block.get("frames", [])) for segment in before["segments"]
                    if segment["device"] == index for block in segment["blocks"] if block["state"] == "active_allocated"]
    lines = [f"allocated before the step: {base / 2**20:.1f} MiB in {len(alive_before)} blocks (the 25 largest groups)"]
    lines += _grouped(alive_before)[:25]
    lines.append(f"peak of the step's own allocations: {peak / 2**20:.1f} MiB in {len(peak_live)} blocks")
    lines += _grouped(list(peak_live.values()))
    return "\n".join(lines) + "\n"


def _file_label(text: str) -> str:
    return text.replace("/", "-").replace("+", "_").replace("=", "")


class Profiler:
    """The harness's measurement for ``profile``: profile tables written to a file per case."""

    def __init__(self, out: Path, device: torch.device, memory: bool, host: bool, timeline: bool = False,
                 lines: list[wrapper_lines.ModuleLines] | None = None):
        self.out, self.device, self.memory, self.host, self.timeline = out, device, memory, host, timeline
        self.lines = lines  # the instrumented wrappers (--lines), else None

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
        label = f"{_file_label(record['workload'])}_{_file_label(spec.label)}"
        if self.timeline:
            text += "\n" + timeline_table(step, self.device, self.out / f"{label}_trace.json.gz")
        if self.lines is not None and spec.backend.name != "eager":
            wrapper_lines.reset(self.lines)
            for _ in range(PROFILED_STEPS):
                step.run(lambda: None)
            synchronize(self.device)
            text += f"\nwrappers, host time per line over {PROFILED_STEPS} steps\n" + wrapper_lines.table(self.lines)
        path = self.out / f"{label}.txt"
        path.write_text(text, encoding="utf-8")
        print(f"== {record['workload']} {spec.label}\n{text}", flush=True)
        record.update(host_ms=host_ms, kernel_ms=sum(row.ms for row in rows), profile=path.name,
                      top_kernels=[(row.name[:120], row.ms) for row in rows[:10]])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_case_arguments(parser, timing=False)
    parser.add_argument("--memory", action="store_true", help="also the live allocations at the peak (CUDA)")
    parser.add_argument("--host", action="store_true", help="also a cProfile of the host work per step")
    parser.add_argument("--timeline", action="store_true",
                        help="also a torch.profiler trace of CPU and GPU over a few steps, and its summary")
    parser.add_argument("--lines", action="store_true",
                        help="also the host time of each line of ait's and Inductor's wrappers, clocked without a profiler")
    parser.add_argument("--out", required=True, help="folder for the profile files and profile.json")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    defaults = DEFAULT_WORKLOADS.split(",")
    harness.resolve_case_arguments(args, parser, lambda device: defaults, lambda device: ["eager", "inductor", "ait"])


def execute(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(out / "profile.json", provenance(args.command_line, args.device, scale=args.scale))
    with contextlib.ExitStack() as stack:
        lines = stack.enter_context(wrapper_lines.record()) if args.lines else None
        if args.memory and args.device.type == "cuda":
            record_memory_history(True)
            stack.callback(record_memory_history, False)
        return _profile_all(args, out, recorder, Profiler(out, args.device, args.memory, args.host, args.timeline, lines))


def _profile_all(args: argparse.Namespace, out: Path, recorder: Recorder, measure: Profiler) -> int:
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
