"""The main job: the seed workloads through eager, Inductor and ait, checked and timed side by side.

    python -m benchmarks [run] [--suite seeds|models|fusion|micro|all] [--workload simple_mlp,vit_b16_224]
                               [--backends eager,inductor,ait] [--batch 1,32] [--sweep quick|full]
                               [--scale seed|small|tiny] [--out DIR]

(``python -m benchmarks.run ...`` is the same command.) On CUDA: every workload of
``benchmarks/workloads.py`` at the seed tables' shapes and precision, a quick subset of their batch
sizes (``--sweep full`` for the seed tables' sweep), backends eager, inductor,
inductor-reduce-overhead, ait and ait-cudagraphs. On a CPU-only machine: a small default (ait
against eager on the cheap workloads, under a minute on 2 cores).

``--suite models`` runs the real-model suite instead (``benchmarks/model_suite.py``: torchvision
and Hugging Face models built from code, inference and a training step); ``fusion`` and ``micro``
the kernel-level suites (``fusion_cases.py``, ``micro/cases.py``); ``all`` every one.

Each case goes through the harness (``benchmarks/harness.py``): eager first as the reference,
float64 as the accuracy reference, each compiled backend compiled cold, checked by dynamo's
accuracy rule, compiled warm, then timed (median after warm-up), with peak memory and, on CUDA,
kernel time per step. A wrong result or a backend error is printed loudly and makes the exit
status 1; the other cases still run.

Writes results.json (after every case, so an interrupted run keeps what it measured), results.md and
PNG plots to ``benchmarks/results/<device>/`` (``--out`` to change) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks import cli, harness, report
from benchmarks.backends import default_backends
from benchmarks.recording import Recorder, provenance
from benchmarks.workloads import SUITES, default_workloads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_case_arguments(parser)
    parser.add_argument("--suite", choices=SUITES, default="seeds",
                        help="seeds: the seed documents' workloads (default); models: the real-model suite "
                        "(torchvision and transformers, when installed); fusion, micro: the kernel-level suites; "
                        "all: every suite")
    parser.add_argument("--sweep", choices=("quick", "full"), default="quick",
                        help="quick: a few batch sizes per workload (default); full: the seed tables' sweep")
    parser.add_argument("--out", help="output folder (default: benchmarks/results/<device>/)")
    parser.add_argument("--no-plots", action="store_true")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from benchmarks import model_suite
    from benchmarks.workloads import WORKLOADS

    harness.resolve_case_arguments(args, parser, lambda device: default_workloads(device, args.suite), default_backends)
    if not args.workload and args.suite in ("models", "all"):
        missing = sorted({model_suite.library_of(n) for n, w in WORKLOADS.items()
                          if w.suite == "models" and not model_suite.available(n)} - {None})
        if missing:
            print(f"note: {', '.join(missing)} not installed: its models are left out", file=sys.stderr)


def plan_cases(args: argparse.Namespace) -> list:
    return harness.plan_cases(args.workloads, args.scale, args.sweep, args.batches)


def execute(args: argparse.Namespace) -> int:
    out_dir = Path(args.out) if args.out else report.RESULTS_ROOT / report.device_slug(
        torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu")
    environment = provenance(args.command_line, args.device, scale=args.scale,
                             sweep="custom" if args.batches else args.sweep)
    recorder = Recorder(out_dir / "results.json", environment)
    failed = harness.run_cases(plan_cases(args), harness.settings_from(args), recorder)
    print(report.write_outputs(recorder.results, out_dir, plots=not args.no_plots))
    if failed:
        print("FAILED: a backend gave a wrong result or an error (see above and the Problems section)",
              file=sys.stderr)
        return 1
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return cli.parse_args(["run", *(argv or [])])[1]


def main(argv: list[str] | None = None) -> int:
    return cli.alias("run", argv)


if __name__ == "__main__":
    sys.exit(main())
