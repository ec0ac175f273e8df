"""Micro-benchmarks of the kernel families: pointwise, reduction, GEMM with epilogue.

    python -m benchmarks micro [--families pointwise,reduction] [--backends eager,inductor,ait]
                               [--out DIR] [--scale seed|small|tiny] [--quick]

(``python -m benchmarks.micro ...`` is the same command.) The cases are the ``micro`` suite
(``benchmarks/micro/cases.py``), run through the harness like every other workload: checked
against eager and float64, then timed with CUDA events (``perf_counter`` on a CPU). Prints a
markdown table (median per call, speedup over eager); with ``--out`` also writes ``micro.json``
and ``micro.md`` there. A wrong compiled result fails the run (exit status 1).

``bench`` is the body of the pytest-benchmark tests (``pytest benchmarks/micro --benchmark-only``):
the same build and check, timed by pytest-benchmark's wall clock instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks import cli, harness
from benchmarks.backends import BackendSpec, parse_backend
from benchmarks.measure import synchronize
from benchmarks.micro.cases import BACKENDS, FAMILIES, family_of
from benchmarks.recording import Record, Recorder, provenance
from benchmarks.workload_types import Built, Workload
from benchmarks.workloads import WORKLOADS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_case_arguments(parser, warm_compile="none")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated, of {', '.join(FAMILIES)}")
    parser.add_argument("--out", help="folder for micro.json and micro.md (default: print only)")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in families:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")

    def chosen(device: torch.device) -> list[str]:
        return [name for name, w in WORKLOADS.items() if w.suite == "micro" and family_of(w) in families]

    harness.resolve_case_arguments(args, parser, chosen, lambda device: list(BACKENDS))


def table(records: list[Record], backends: list[str]) -> str:
    by_case: dict[str, dict[str, Record]] = {}
    for row in records:
        by_case.setdefault(row["workload"], {})[row["backend"]] = row
    lines = ["| case | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
    for case, cells in by_case.items():
        eager = cells.get("eager", {}).get("median_ms")
        texts = []
        for backend in backends:
            row = cells.get(backend)
            if row is None:
                texts.append("")
            elif row["status"] != "ok":
                texts.append(f"**{row['status'].upper()}**")
            else:
                ratio = f" ({eager / row['median_ms']:.2f}x)" if eager and backend != "eager" else ""
                texts.append(f"{row['median_ms'] * 1e3:.1f} us{ratio}")
        lines.append(f"| {case} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def execute(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    recorder = Recorder(None if out is None else out / "micro.json",
                        provenance(args.command_line, args.device, scale=args.scale))
    cases = harness.plan_cases(args.workloads, args.scale, "quick", None)
    failed = harness.run_cases(cases, harness.settings_from(args), recorder)
    env = recorder.environment
    text = (f"# Micro-benchmarks: {env['device_name']}, torch {env['torch']}, commit {str(env['git_commit'])[:10]}\n\n"
            + table(recorder.records, [spec.label for spec in args.specs]) + "\n")
    print(text)
    if out is not None:
        (out / "micro.md").write_text(text, encoding="utf-8")
    return 1 if failed else 0


def _run_synchronized(step: Any, device: torch.device) -> None:
    """One call, waiting for the device: what pytest-benchmark's wall clock should see."""
    step.run(lambda: None)
    synchronize(device)


def bench(benchmark: Any, case: Workload, backend: str, device: torch.device | None = None,
          scale: str = "seed") -> None:
    """The body of every pytest-benchmark test: the harness builds and checks the case (an
    ``AssertionError`` naming it if the result is wrong), pytest-benchmark times it (CUDA by default)."""
    device = device or torch.device("cuda")
    spec = parse_backend(backend, device)

    def measure(step: Any, record: Record, built: Built, measured: BackendSpec) -> None:
        benchmark.group = case.name
        benchmark.extra_info.update(family=family_of(case), case=case.name, backend=backend,
                                    description=case.description)
        benchmark.pedantic(_run_synchronized, args=(step, device), warmup_rounds=3, rounds=30, iterations=5)

    runner = harness.CaseRunner(harness.Settings(device, scale, [spec], kernel_time=False), measure=measure)
    (record,) = runner.run(case, None, measure_warm=False)
    if record["status"] != "ok":
        raise AssertionError(f"{case.name} with {backend}: {record['status']}: {record.get('message')}")


def main(argv: list[str] | None = None) -> int:
    return cli.alias("micro", argv)


if __name__ == "__main__":
    sys.exit(main())
