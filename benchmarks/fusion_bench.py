"""Fusion benchmarks: memory-bound cases where fusion decides the time, eager vs Inductor vs ait.

    python -m benchmarks fusion --out DIR [--only softmax,tutorial] [--backends eager,inductor,ait+autotune=true]
                                [--scale seed|small|tiny] [--quick]

(``python -m benchmarks.fusion_bench ...`` is the same command.) The cases are the ``fusion``
suite (``benchmarks/fusion_cases.py``: a pointwise chain, softmax and layer_norm in three dtypes,
forward + backward) and seed 004's ``tutorial_8192x8192``; ``--only`` keeps those whose name holds
one of the given substrings. Each goes through the harness (checked against eager and float64,
cold compile time with empty caches, median time after warm-up) and its record adds the effective
bandwidth (``gbps``, from the bytes a fused implementation must move) and its fraction of the
device-to-device copy bandwidth measured at the start. Writes ``DIR/fusion_bench.json`` and
``DIR/fusion_bench.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks import cli, harness
from benchmarks.fusion_cases import FUSION_EXTRA
from benchmarks.measure import TimingPolicy, time_step
from benchmarks.recording import Record, Recorder, provenance
from benchmarks.workloads import WORKLOADS

BACKENDS = ("eager", "inductor", "ait")
_COPY_NUMEL = {"seed": 1 << 26, "small": 1 << 22, "tiny": 1 << 12}  # 256 MiB of fp32 at the seed scale


def _default_workloads(device: torch.device) -> list[str]:
    return [name for name, w in WORKLOADS.items() if w.suite == "fusion"] + list(FUSION_EXTRA)


class _CopyStep:
    phases = ("copy",)

    def __init__(self, numel: int, device: torch.device):
        self.src = torch.randn(numel, device=device)
        self.dst = torch.empty_like(self.src)

    def run(self, mark: Callable[[], None]) -> None:
        self.dst.copy_(self.src)
        mark()


def copy_bandwidth(device: torch.device, scale: str, quick: bool) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write): the ceiling of a memory-bound kernel."""
    step = _CopyStep(_COPY_NUMEL[scale], device)
    timing = time_step(step, device, TimingPolicy.for_device(device, quick=quick))
    return 2 * step.src.nbytes / timing.median_ms / 1e6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_case_arguments(parser, warm_compile="none")
    parser.add_argument("--only", default="", help="comma-separated substrings of workload names")
    parser.add_argument("--out", required=True, help="folder for fusion_bench.json and fusion_bench.md")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    harness.resolve_case_arguments(args, parser, _default_workloads, lambda device: list(BACKENDS))
    wanted = [w for w in args.only.split(",") if w]
    if wanted:
        args.workloads = [name for name in args.workloads if any(k in name for k in wanted)]
        if not args.workloads:
            parser.error(f"--only {args.only!r} matches no workload")


def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(records: list[Record], environment: dict[str, Any]) -> str:
    lines = [f"# Fusion benchmarks: {environment.get('device_name')}", "",
             f"Device-to-device copy: {environment['copy_gbps']:.0f} GB/s; torch {environment.get('torch')}, "
             f"triton {environment.get('triton')}, commit {str(environment.get('git_commit'))[:10]}; "
             f"`{environment.get('command')}`", "",
             "| workload | input | backend | ms | GB/s | % of copy | compile s | ait kernels | accuracy vs fp64 |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['workload']} | {r.get('input', '')} | {r['backend']} | **{r['status'].upper()}** "
                         f"| | | | | {str(r.get('message', ''))[:120].replace('|', '/')} |")
            continue
        kernels = (r.get("ait_metrics") or {}).get("generated_kernels")
        fraction = r.get("copy_fraction")
        lines.append(f"| {r['workload']} | {r.get('input', '')} | {r['backend']} | {_fmt(r.get('median_ms'), 3)} | "
                     f"{_fmt(r.get('gbps'), 0)} | {'-' if fraction is None else f'{100 * fraction:.0f}%'} | "
                     f"{_fmt(r.get('compile_cold_s'), 2)} | {'-' if kernels is None else kernels} | "
                     f"{r.get('accuracy', '-')} |")
    return "\n".join(lines) + "\n"


def execute(args: argparse.Namespace) -> int:
    out = Path(args.out)
    copy_gbps = copy_bandwidth(args.device, args.scale, args.quick)
    recorder = Recorder(out / "fusion_bench.json",
                        provenance(args.command_line, args.device, scale=args.scale, copy_gbps=copy_gbps))
    cases = harness.plan_cases(args.workloads, args.scale, "quick", args.batches)
    failed = harness.run_cases(cases, harness.settings_from(args), recorder)
    for record in recorder.records:
        if record.get("gbps") is not None:
            record["copy_fraction"] = record["gbps"] / copy_gbps
    recorder.save()
    table = markdown(recorder.records, recorder.environment)
    (out / "fusion_bench.md").write_text(table, encoding="utf-8")
    print(table)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.alias("fusion", argv)


if __name__ == "__main__":
    sys.exit(main())
