"""``python -m benchmarks <subcommand>``: every benchmark of the project behind one command line.

    python -m benchmarks [run] [--suite seeds|models|fusion|micro|all] ...   the main job (the default)
    python -m benchmarks train     training steps: step time, peak memory above inputs, memory-budget sweep
    python -m benchmarks fusion    memory-bound fusion cases: time and GB/s against copy bandwidth
    python -m benchmarks micro     kernel-family micro cases (pointwise, reduction, GEMM epilogue, depthwise convolution)
    python -m benchmarks profile   per-kernel time, live tensors at the memory peak, host profile
    python -m benchmarks partition partition time of a 24-layer transformer's joint graph
    python -m benchmarks ddp       a DistributedDataParallel training step over several processes
    python -m benchmarks cutlass   CUTLASS GEMMs with fused epilogues against cuBLAS, Inductor, the template
    python -m benchmarks report    results JSON → markdown and plots (merges runs)
    python -m benchmarks compare   regression check between two results JSON files

Every subcommand that measures builds its workloads from one table (``benchmarks/workloads.py``),
times, checks and records through one path (``measure.py``, ``harness.py``, ``recording.py``):
``python -m benchmarks <subcommand> --help`` for its options.

The module paths of the scripts these replaced still work and mean the same subcommand:
``python -m benchmarks.run`` (= ``run``, what CI and the README call), ``benchmarks.train_bench``,
``benchmarks.fusion_bench``, ``benchmarks.micro``, ``benchmarks.profile_gpu``,
``benchmarks.partition_bench``, ``benchmarks.ddp_bench``, ``benchmarks.report``, ``benchmarks.compare``.

A subcommand is a module with ``add_arguments(parser)``, optionally ``check_args(args, parser)``
(validation that needs the parsed values; errors through ``parser.error``), and
``execute(args) -> exit status``; only the chosen one is imported, so ``report`` and ``compare``
start without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

from benchmarks.recording import command_line


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("run", "benchmarks.run", "the main job: workloads through eager, Inductor and ait, checked and timed"),
        Command("train", "benchmarks.train_bench", "training steps: time, peak memory above inputs, memory-budget sweep"),
        Command("fusion", "benchmarks.fusion_bench", "fusion cases: time and bandwidth against device copy"),
        Command("micro", "benchmarks.micro.runner", "kernel-family micro cases (pointwise, reduction, GEMM epilogue, depthwise convolution)"),
        Command("profile", "benchmarks.profile_gpu", "per-kernel time, tensors alive at the memory peak, host profile"),
        Command("partition", "benchmarks.partition_bench", "partition time of a transformer's joint graph"),
        Command("ddp", "benchmarks.ddp_bench", "DistributedDataParallel training step over several processes"),
        Command("cutlass", "benchmarks.cutlass_bench", "CUTLASS GEMMs with fused epilogues against cuBLAS, Inductor, the template"),
        Command("report", "benchmarks.report", "results JSON to markdown and plots; merges runs"),
        Command("compare", "benchmarks.compare", "regression check between two results JSON files"),
    )
}
DEFAULT = "run"


def _normalise(argv: list[str]) -> list[str]:
    """No subcommand (nothing, or options first) means ``run``: ``python -m benchmarks`` is the main job."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        return [DEFAULT, *argv]
    return argv


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser], ModuleType | None]:
    """The top-level parser; only the chosen subcommand's module is imported and fills its parser."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    parsers = {}
    module = None
    for command in COMMANDS.values():
        if command.name == chosen:
            module = importlib.import_module(command.module)
            sub = subparsers.add_parser(command.name, help=command.help, description=module.__doc__,
                                        formatter_class=argparse.RawDescriptionHelpFormatter)
            module.add_arguments(sub)
        else:
            sub = subparsers.add_parser(command.name, help=command.help)
        parsers[command.name] = sub
    return parser, parsers, module


def parse_args(argv: list[str] | None = None) -> tuple[ModuleType, argparse.Namespace]:
    """The chosen subcommand's module and its checked arguments (``SystemExit`` 2 on bad input)."""
    argv = _normalise(list(sys.argv[1:] if argv is None else argv))
    parser, parsers, module = _parser(argv[0] if argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    assert module is not None  # argparse rejected any other first word
    args.command_line = command_line(argv)
    check = getattr(module, "check_args", None)
    if check is not None:
        check(args, parsers[args.command])
    return module, args


def main(argv: list[str] | None = None) -> int:
    module, args = parse_args(argv)
    return module.execute(args)


def alias(command: str, argv: list[str] | None = None) -> int:
    """An old module path (``python -m benchmarks.train_bench ...``): the same as the subcommand."""
    return main([command, *(sys.argv[1:] if argv is None else argv)])
