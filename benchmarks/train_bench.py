"""Training steps: step time and peak memory of every backend, and a sweep of ait's memory budget.

    python -m benchmarks train --out DIR [--workload encoder_block_train,vit_b16_train] [--batch 64]
                               [--backends eager,inductor,ait] [--sweep-backends ait-cudagraphs]
                               [--budgets 1.0,0.6,0.4,0.25,0.1]
    python -m benchmarks train --out DIR --scale tiny --device cpu --budgets 0.5 --quick   # smoke test

(``python -m benchmarks.train_bench ...`` is the same command.) The workloads are the ``train``
entries of ``benchmarks/workloads.py`` (and of the model suite, by name): one step is forward with
the loss, backward and an SGD update, under bf16 autocast on CUDA (fp32 on a CPU). Until
2026-12 this script had its own bf16 models and timed forward + backward alone; the committed
``train_bench.*`` files of ``benchmarks/results/nvidia-h200/`` are of that older step.

Each backend, and each ``--sweep-backends`` backend once per ``--budgets`` fraction (as
``<backend>+memory_budget=<fraction>``), runs through the harness: checked against eager and
float64 by dynamo's accuracy rule, then timed. "Peak above inputs" is the CUDA allocator's peak
during the timed steps minus what was in use before the backend's first step (parameters,
inputs, its copy of the weights): activations, gradients, optimizer state, workspaces and
whatever a backend keeps between steps. It is given as allocated memory and as reserved memory,
which also counts a CUDA graph's private pool. "Saved MiB" is what ait's partition keeps for the
backward. Writes ``DIR/train_bench.json``, ``DIR/train_bench.md`` and ``DIR/budget_sweep.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks import cli, harness
from benchmarks.backends import BackendSpec, default_backends, parse_backend
from benchmarks.recording import Record, Recorder, provenance
from benchmarks.workloads import WORKLOADS, Workload

DEFAULT_BUDGETS = "1.0,0.6,0.4,0.25,0.1"


def _default_workloads(device: torch.device) -> list[str]:
    return [name for name, w in WORKLOADS.items()
            if w.suite == "seeds" and w.mode == "train" and (device.type == "cuda" or w.cpu_default)]


def _train_only(workload: Workload) -> str | None:
    return None if workload.mode == "train" else f"not a training step (mode {workload.mode})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    harness.add_case_arguments(parser, warm_compile="none")
    parser.add_argument("--sweep-backends", help="comma-separated ait backends the memory-budget sweep runs "
                        "(default: ait-cudagraphs on CUDA, ait on a CPU; '' for no sweep)")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS,
                        help=f"memory_budget values of the sweep (default {DEFAULT_BUDGETS})")
    parser.add_argument("--out", required=True, help="folder for train_bench.json/.md and budget_sweep.png")
    parser.add_argument("--no-plots", action="store_true")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    harness.resolve_case_arguments(args, parser, _default_workloads, default_backends, accept=_train_only)
    sweep = args.sweep_backends
    if sweep is None:
        sweep = "ait-cudagraphs" if args.device.type == "cuda" else "ait"
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    args.sweep_labels = []
    for name in (s.strip() for s in sweep.split(",") if s.strip()):
        for budget in budgets:
            try:
                spec = parse_backend(f"{name}+memory_budget={budget}", args.device)
            except ValueError as error:
                parser.error(f"--sweep-backends/--budgets: {error}")
            if spec.label in {s.label for s in args.specs}:
                parser.error(f"{spec.label} is both in --backends and in the sweep")
            args.specs.append(spec)
            args.sweep_labels.append(spec.label)


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(records: list[Record], specs: list[BackendSpec], environment: dict[str, Any]) -> str:
    budgets = {spec.label: spec.options.get("memory_budget", "") for spec in specs}
    lines = [f"# Training step: {environment.get('device_name')}", "",
             f"torch {environment.get('torch')}, triton {environment.get('triton')}, commit "
             f"{str(environment.get('git_commit'))[:10]}; `{environment.get('command')}`", "",
             "| workload | batch | backend | memory budget | step ms | peak MiB above inputs (allocated) | "
             "(reserved) | saved MiB | compile s | accuracy vs fp64 | notes |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in records:
        notes = "; ".join(([r["message"]] if r.get("message") else []) + r.get("notes", []))
        lines.append(f"| {r['workload']} | {r.get('batch') or '-'} | {r['backend']} | {budgets.get(r['backend'], '')} | "
                     f"{_fmt(r.get('median_ms'), 3) if r['status'] == 'ok' else r['status'].upper()} | "
                     f"{_fmt(r.get('above_inputs_mib'), 1)} | {_fmt(r.get('reserved_above_inputs_mib'), 1)} | "
                     f"{_fmt(r.get('saved_mib'), 1)} | {_fmt(r.get('compile_cold_s'), 1)} | {r.get('accuracy', '')} | "
                     f"{notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def plot_sweep(records: list[Record], specs: list[BackendSpec], sweep_labels: list[str], path: Path) -> bool:
    """Per workload: step time (left axis) and peak memory (right axis, reserved: it includes
    CUDA-graph pools; allocated on a CPU has none, so saved MiB only) over the budget for every
    swept backend, with the other backends as flat lines."""
    from benchmarks.report import pyplot

    plt = pyplot()
    options = {spec.label: spec.options for spec in specs}
    swept = [r for r in records if r["backend"] in sweep_labels and r.get("median_ms") is not None]
    workloads = sorted({r["workload"] for r in swept})
    if plt is None or not workloads:
        return False
    fig, axes = plt.subplots(1, len(workloads), figsize=(7 * len(workloads), 5), squeeze=False)
    styles = ["o-", "s-", "^-", "d-"]
    for ax, name in zip(axes[0], workloads):
        twin = ax.twinx()
        bases = sorted({r["backend"].split("+")[0] for r in swept if r["workload"] == name})
        for style, base in zip(styles, bases):
            sweep = sorted((float(options[r["backend"]]["memory_budget"]), r) for r in swept
                           if r["workload"] == name and r["backend"].split("+")[0] == base)
            fractions = [f for f, _ in sweep]
            ax.plot(fractions, [r["median_ms"] for _, r in sweep], style, color="tab:blue", label=f"{base}: step ms")
            if any(r.get("reserved_above_inputs_mib") is not None for _, r in sweep):
                twin.plot(fractions, [r.get("reserved_above_inputs_mib") for _, r in sweep], style.replace("-", "--"),
                          color="tab:red", label=f"{base}: peak MiB (reserved)")
            twin.plot(fractions, [r.get("saved_mib") for _, r in sweep], style.replace("-", ":"), color="tab:orange",
                      label=f"{base}: saved MiB")
        for r in records:
            if r["workload"] == name and r["backend"] not in sweep_labels and r.get("median_ms") is not None:
                ax.axhline(r["median_ms"], color="tab:blue", alpha=0.35, linestyle=":")
                if r.get("reserved_above_inputs_mib") is not None:
                    twin.axhline(r["reserved_above_inputs_mib"], color="tab:red", alpha=0.35, linestyle=":")
                ax.annotate(r["backend"], (1.0, r["median_ms"]), fontsize=7, alpha=0.7)
        ax.set_xlabel("memory_budget (fraction of the default partition's saved bytes)")
        ax.set_ylabel("step time (ms)", color="tab:blue")
        twin.set_ylabel("MiB", color="tab:red")
        ax.invert_xaxis()
        ax.set_title(f"{name}: step time and memory over the budget (flat lines: other backends)", fontsize=9)
        lines, more = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def execute(args: argparse.Namespace) -> int:
    out = Path(args.out)
    recorder = Recorder(out / "train_bench.json", provenance(args.command_line, args.device, scale=args.scale))
    cases = harness.plan_cases(args.workloads, args.scale, "quick", args.batches)
    failed = harness.run_cases(cases, harness.settings_from(args), recorder)
    table = markdown(recorder.records, args.specs, recorder.environment)
    (out / "train_bench.md").write_text(table, encoding="utf-8")
    if not args.no_plots:
        plot_sweep(recorder.records, args.specs, args.sweep_labels, out / "budget_sweep.png")
    print(table)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return cli.alias("train", argv)


if __name__ == "__main__":
    sys.exit(main())
