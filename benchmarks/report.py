"""Results JSON → markdown tables and PNG plots; also merges several runs' JSON into one.

    python -m benchmarks report results.json [more.json ...] [--out DIR] [--no-plots]

Reads what any measuring subcommand writes (``results.json`` of ``run``, ``train_bench.json``,
``fusion_bench.json``, ``micro.json``, ...: one format, ``benchmarks/recording.py``). With no
``--out`` the outputs go to ``benchmarks/results/<device>/`` (device from the JSON). Later files win
where two runs measured the same (workload, batch, backend). Plots need matplotlib; without it the
markdown is still written. (``python -m benchmarks.report ...`` is the same command.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

from benchmarks.recording import SCHEMA, Record, Results, case_key, write_json  # noqa: F401 - re-exported

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
BACKEND_ORDER = ("eager", "inductor", "inductor-reduce-overhead", "ait", "ait-cudagraphs")
PLOT_FILES = ("speedup.png", "compile_time.png")

def device_slug(name: str) -> str:
    """``"NVIDIA H200"`` → ``"nvidia-h200"``: the results folder of a device."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-device"


def load_results(path: str | os.PathLike[str]) -> Results:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read benchmark results {path}: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path} is not a benchmark results file (no 'results' list)")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: results schema {data.get('schema')!r}, this reader knows {SCHEMA}")
    return data


def merge_results(runs: Iterable[Results]) -> Results:
    """One results object; a case measured in several runs keeps the last run's record."""
    runs = list(runs)
    if not runs:
        raise ValueError("merge_results: no results given")
    merged: dict[tuple[str, int | None, str], Record] = {}
    for run in runs:
        for record in run["results"]:
            key = case_key(record)
            # a case that did not run does not replace a measurement from another run
            if key in merged and record.get("status") == "not run":
                continue
            merged[key] = record
    environment = dict(runs[0]["environment"])
    if len(runs) > 1:
        environment["merged_runs"] = [run["environment"] for run in runs]
    return {"schema": SCHEMA, "environment": environment, "results": list(merged.values())}


# --- tables ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.{digits}g}" if abs(value) < 0.01 else f"{value:.{digits}f}"


def _batch(record: Record) -> str:
    return "-" if record.get("batch") is None else str(record["batch"])


def _ordered_backends(records: list[Record]) -> list[str]:
    present = {r["backend"] for r in records}
    return [b for b in BACKEND_ORDER if b in present] + sorted(present - set(BACKEND_ORDER))


def _cases(records: list[Record]) -> list[tuple[str, int | None]]:
    """(workload, batch) in the order first seen, batches ascending within a workload."""
    workloads: list[str] = []
    batches: dict[str, list[int | None]] = {}
    for r in records:
        if r["workload"] not in batches:
            workloads.append(r["workload"])
            batches[r["workload"]] = []
        if r.get("batch") not in batches[r["workload"]]:
            batches[r["workload"]].append(r.get("batch"))
    return [(w, b) for w in workloads for b in sorted(batches[w], key=lambda x: -1 if x is None else x)]


def speedups(results: Results) -> dict[tuple[str, int | None, str], float]:
    """Eager median / backend median for every measured case with an eager measurement; where the
    backend was timed interleaved with eager (on a CPU, or with ``--interleave``), the median of its
    per-round ratios."""
    by_key = {case_key(r): r for r in results["results"]}
    table = {}
    for (workload, batch, backend), record in by_key.items():
        eager = by_key.get((workload, batch, "eager"))
        if record.get("status") != "ok" or not record.get("median_ms"):
            continue
        if record.get("speedup_vs_eager"):
            table[(workload, batch, backend)] = record["speedup_vs_eager"]
        elif eager and eager.get("median_ms"):
            table[(workload, batch, backend)] = eager["median_ms"] / record["median_ms"]
    return table


def _status_cell(record: Record | None, speedup: float | None) -> str:
    if record is None:
        return ""
    status = record.get("status")
    if status == "ok":
        text = f"{_fmt(record.get('median_ms'))} ms"
        if speedup is None or record["backend"] == "eager":
            return text
        spread = record.get("speedup_round_quartiles")
        return text + (f" ({speedup:.2f}x, rounds {spread[0]:.2f}-{spread[1]:.2f})" if spread else f" ({speedup:.2f}x)")
    if status == "wrong":
        return f"**WRONG** ({_fmt(record.get('median_ms'))} ms)"
    return status or "?"


def speedup_table(results: Results) -> str:
    records = results["results"]
    backends = _ordered_backends(records)
    by_key = {case_key(r): r for r in records}
    ratios = speedups(results)
    first = {}
    for r in records:
        first.setdefault((r["workload"], r.get("batch")), r)
    lines = ["| workload | batch | input | precision | " + " | ".join(backends) + " |",
             "|---|---:|---|---|" + "---:|" * len(backends)]
    for workload, batch in _cases(records):
        meta = first[(workload, batch)]
        cells = [_status_cell(by_key.get((workload, batch, b)), ratios.get((workload, batch, b))) for b in backends]
        lines.append(f"| {workload} | {_batch(meta)} | {meta.get('input', '')} | {meta.get('precision', '')} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def compile_table(results: Results) -> str:
    rows = [r for r in results["results"] if r.get("compile_cold_s") is not None]
    if not rows:
        return "(no compiled backend ran)"
    lines = ["| workload | batch | backend | cold compile s | warm compile s |", "|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {_batch(r)} | {r['backend']} | {_fmt(r.get('compile_cold_s'), 2)} | "
                     f"{_fmt(r.get('compile_warm_s'), 2)} |")
    return "\n".join(lines)


def ait_table(results: Results) -> str:
    rows = [r for r in results["results"] if r.get("ait_metrics")]
    if not rows:
        return "(ait did not run)"
    lines = ["| workload | batch | graphs | generated kernels | fused ops | ATen externs | fallbacks | fallback reasons |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        m = r["ait_metrics"]
        reasons = "; ".join(m.get("fallback_reasons", [])) or "-"
        lines.append(f"| {r['workload']} | {_batch(r)} | {m.get('graphs_compiled', '-')} | "
                     f"{m.get('generated_kernels', '-')} | {m.get('fused_ops', '-')} | {m.get('extern_calls', '-')} | "
                     f"{m.get('fallbacks', '-')} | {reasons} |")
    return "\n".join(lines)


def detail_table(results: Results) -> str:
    lines = ["| workload | batch | backend | status | median ms | kernel ms | host us/step | launches | host us/launch | "
             "phases ms | iters | items/s | peak MiB | rel. error vs eager | accuracy vs fp64 |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in results["results"]:
        phases = ", ".join(f"{k} {_fmt(v)}" for k, v in (r.get("phases_ms") or {}).items()) or "-"
        error = r.get("max_rel_error")
        error_cell = "-" if error is None else f"{_fmt(error, 2)} (tol {r.get('tolerance')})"
        lines.append(f"| {r['workload']} | {_batch(r)} | {r['backend']} | {r.get('status')} | "
                     f"{_fmt(r.get('median_ms'))} | {_fmt(r.get('kernel_ms'))} | {_fmt(r.get('host_us'), 0)} | "
                     f"{_fmt(r.get('launches'), 0)} | {_fmt(r.get('us_per_launch'), 1)} | {phases} | {r.get('iters') or '-'} | "
                     f"{_fmt(r.get('items_per_s'), 1)} | {_fmt(r.get('peak_mem_mib'), 1)} | {error_cell} | "
                     f"{r.get('accuracy', '-')} |")
    return "\n".join(lines)


def problems(results: Results) -> list[str]:
    out = []
    for r in results["results"]:
        if r.get("status") not in ("ok",):
            out.append(f"{r['workload']} batch {_batch(r)} {r['backend']}: {r.get('status')}"
                       + (f" - {r['message']}" if r.get("message") else ""))
    return out


def environment_line(environment: dict[str, Any]) -> str:
    parts = [environment.get("device_name", "?"), f"torch {environment.get('torch', '?')}"]
    if environment.get("triton"):
        parts.append(f"triton {environment['triton']}")
    if environment.get("cuda"):
        parts.append(f"CUDA {environment['cuda']}")
    dirty = " with uncommitted changes" if environment.get("git_dirty") else ""
    parts.append(f"ait_dynamo {environment.get('ait_dynamo', '?')} ({environment.get('git_commit', '?')[:10]}{dirty})")
    if "scale" in environment:
        parts.append(f"scale {environment['scale']}" + (f", sweep {environment['sweep']}" if "sweep" in environment else ""))
    line = ", ".join(parts) + f"; {environment.get('timestamp', '')}"
    return line + (f"\n\nCommand: `{environment['command']}`" if environment.get("command") else "")


def markdown(results: Results, plots: Iterable[str] = ()) -> str:
    env = results["environment"]
    sections = [
        f"# Benchmark results: {env.get('device_name', '?')}",
        environment_line(env),
        "Median latency per iteration after warm-up (CUDA events on a GPU), speedup = eager / backend. "
        "On a CPU (and on CUDA with `--interleave`) each compiled backend is timed interleaved with eager (alternating rounds of a few "
        "iterations each): its speedup is the median over rounds of eager's time over its own in the same "
        "round, and \"rounds a-b\" the middle half (quartiles) of those ratios; a wide one means the machine's "
        "load changed within rounds. Eager's own column is its median over those windows. "
        "Inference in the seed tables' precision under `torch.no_grad()`; `fwd_bwd` is forward + "
        "`out.sum().backward()`; `train` is one step (forward + loss, backward, SGD). Every compiled "
        "result is checked against eager before timing.",
        "## Latency and speedup over eager\n\n" + speedup_table(results),
    ]
    sections += [f"![{name}]({name})" for name in plots]
    sections += [
        "## Compile time\n\nCold: first call after `torch._dynamo.reset()` with empty on-disk caches at the "
        "start of the run (later batch sizes may reuse kernels of earlier ones). Warm: the same after another "
        "reset, so the on-disk caches (Inductor FX graph / Triton, ait generated modules) are hit.\n\n"
        + compile_table(results),
        "## What ait compiled (`ait_dynamo.metrics`)\n\n" + ait_table(results),
        "## All measurements\n\n" + detail_table(results),
    ]
    issues = problems(results)
    if issues:
        sections.append("## Problems\n\n" + "\n".join(f"- {line}" for line in issues))
    return "\n\n".join(sections) + "\n"


# --- plots -------------------------------------------------------------------------------------


def pyplot() -> Any | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no plots (pip install matplotlib)", RuntimeWarning, stacklevel=2)
        return None
    return plt


def plot_speedup(results: Results, path: Path) -> bool:
    """Speedup over eager by batch size per batched workload (like the seed tables), bars for fixed shapes."""
    plt = pyplot()
    if plt is None:
        return False
    ratios = speedups(results)
    backends = [b for b in _ordered_backends(results["results"]) if b != "eager"]
    cases = _cases(results["results"])
    batched = [w for w in dict.fromkeys(w for w, b in cases if b is not None)]
    fixed = [w for w, b in cases if b is None]
    panels = batched + (["fixed shapes"] if fixed else [])
    if not panels or not backends:
        return False
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        if panel == "fixed shapes":
            width = 0.8 / len(backends)
            for i, backend in enumerate(backends):
                values = [ratios.get((w, None, backend), 0.0) for w in fixed]
                ax.bar([x + i * width for x in range(len(fixed))], values, width, label=backend)
            ax.set_xticks([x + 0.4 - width / 2 for x in range(len(fixed))])
            ax.set_xticklabels(fixed, rotation=15, fontsize=8)
        else:
            for backend in backends:
                points = sorted((b, ratios[(w, b, backend)]) for w, b in cases
                                if w == panel and b is not None and (w, b, backend) in ratios)
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=backend)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylim(bottom=0)
        ax.set_title(panel, fontsize=10)
        ax.set_ylabel("speedup over eager")
        ax.legend(fontsize=7)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(results["environment"].get("device_name", ""), fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def plot_compile_time(results: Results, path: Path) -> bool:
    """Cold (solid) and warm (hatched) compile seconds per workload and backend, first batch size."""
    plt = pyplot()
    if plt is None:
        return False
    firsts: dict[tuple[str, str], Record] = {}
    for r in results["results"]:
        if r.get("compile_cold_s") is not None:
            firsts.setdefault((r["workload"], r["backend"]), r)
    if not firsts:
        return False
    workloads = list(dict.fromkeys(w for w, _ in firsts))
    backends = [b for b in _ordered_backends(list(firsts.values()))]
    width = 0.8 / (2 * len(backends))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, ax = plt.subplots(figsize=(max(6, 1.4 * len(workloads)), 4))
    for i, backend in enumerate(backends):
        color = colors[i % len(colors)]
        for j, (which, style) in enumerate((("cold", {}), ("warm", {"alpha": 0.45, "hatch": "//"}))):
            xs = [x + (2 * i + j) * width for x in range(len(workloads))]
            values = [firsts.get((w, backend), {}).get(f"compile_{which}_s") or 0.0 for w in workloads]
            ax.bar(xs, values, width, color=color, label=f"{backend} {which}", **style)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(workloads))])
    ax.set_xticklabels(workloads, rotation=20, fontsize=8, ha="right")
    ax.set_ylabel("compile time (s)")
    ax.set_yscale("log")
    ax.set_title("compile time per workload (first batch size)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_outputs(results: Results, out_dir: str | os.PathLike[str], plots: bool = True) -> str:
    """results.json, results.md and the plots into ``out_dir``; returns the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(results, out / "results.json")
    made = []
    if plots:
        if plot_speedup(results, out / PLOT_FILES[0]):
            made.append(PLOT_FILES[0])
        if plot_compile_time(results, out / PLOT_FILES[1]):
            made.append(PLOT_FILES[1])
    text = markdown(results, made)
    (out / "results.md").write_text(text, encoding="utf-8")
    return text


def default_out_dir(results: Results) -> Path:
    return RESULTS_ROOT / device_slug(results["environment"].get("device_name", "unknown"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("json", nargs="+", help="results JSON of one or more runs (merged in order)")
    parser.add_argument("--out", help="output folder (default: benchmarks/results/<device>/)")
    parser.add_argument("--no-plots", action="store_true")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    try:
        args.results = merge_results(load_results(p) for p in args.json)
    except ValueError as error:
        parser.error(str(error))


def execute(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else default_out_dir(args.results)
    print(write_outputs(args.results, out, plots=not args.no_plots))
    print(f"wrote {out}/results.json, results.md" + ("" if args.no_plots else " and plots"), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from benchmarks import cli

    return cli.alias("report", argv)


if __name__ == "__main__":
    sys.exit(main())
