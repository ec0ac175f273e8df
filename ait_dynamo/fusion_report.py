"""Fusion report of one compiled graph: its kernels, the ops in each, bytes each reads and writes,
the ops left to ATen and every refusal with its reason. Logged (INFO: one line per kernel) and,
with ``debug_dir``, written as ``fusion_report.txt`` and ``fusion_report.html`` (open in a browser).
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

from torch import fx

from ait_dynamo.passes.plan import ExternCall, FusionGroup, Plan
from ait_dynamo.passes.sizes import static_int

log = logging.getLogger("ait_dynamo")


@dataclass
class KernelRow:
    name: str
    kind: str
    space: str
    ops: list[str]
    inputs: list[str]
    outputs: list[str]
    bytes_read: int | None
    bytes_written: int | None


@dataclass
class FusionReport:
    graph: str
    kernels: list[KernelRow] = field(default_factory=list)
    externs: list[tuple[str, str]] = field(default_factory=list)  # (node, op)
    refused: dict[str, str] = field(default_factory=dict)
    verification: list[str] = field(default_factory=list)  # the numerics guard's lines (option verify)
    rewrites: list[str] = field(default_factory=list)  # rewrites before AOTAutograd, and their refusals

    def text(self) -> str:
        lines = [f"fusion report of {self.graph}: {len(self.kernels)} kernels, {len(self.externs)} ATen calls"]
        for row in self.kernels:
            lines.append(
                f"  {row.name} ({row.kind} over {row.space}): {len(row.ops)} ops, "
                f"reads {_bytes(row.bytes_read)}, writes {_bytes(row.bytes_written)}"
            )
            lines.append(f"      ops: {', '.join(row.ops)}")
            lines.append(f"      in: {', '.join(row.inputs)}  out: {', '.join(row.outputs)}")
        for node, op in self.externs:
            lines.append(f"  ATen {node} = {op}" + (f"   (not fused: {self.refused[node]})" if node in self.refused else ""))
        if self.rewrites:
            lines.append("  rewrites before AOTAutograd (on the Dynamo graph this came from):")
            lines.extend(f"    {line}" for line in self.rewrites)
        lines.extend(f"  {line}" for line in self.verification)
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(r.name)}</td><td>{esc(r.kind)}</td><td>{esc(r.space)}</td>"
            f"<td>{esc(', '.join(r.ops))}</td><td>{esc(', '.join(r.inputs))}</td><td>{esc(', '.join(r.outputs))}</td>"
            f"<td>{esc(_bytes(r.bytes_read))}</td><td>{esc(_bytes(r.bytes_written))}</td></tr>"
            for r in self.kernels
        )
        externs = "".join(
            f"<tr><td>{esc(node)}</td><td>{esc(op)}</td><td>{esc(self.refused.get(node, ''))}</td></tr>"
            for node, op in self.externs
        )
        verification = "".join(f"<p>{esc(line)}</p>" for line in self.verification)
        if self.rewrites:
            verification = ("<h2>Rewrites before AOTAutograd</h2><ul>"
                            + "".join(f"<li>{esc(line)}</li>" for line in self.rewrites) + "</ul>" + verification)
        return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ait_dynamo fusion report: {esc(self.graph)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #bbb;padding:4px 8px;vertical-align:top;font-size:13px}}th{{background:#eee}}</style>
</head><body>
<h1>Fusion report: {esc(self.graph)}</h1>
<p>{len(self.kernels)} generated kernels, {len(self.externs)} ATen calls.</p>
<h2>Kernels</h2>
<table><tr><th>kernel</th><th>kind</th><th>iteration space</th><th>ops</th><th>reads</th><th>writes</th><th>bytes read</th><th>bytes written</th></tr>
{rows}</table>
{verification}
<h2>ATen calls (and why they were not fused)</h2>
<table><tr><th>node</th><th>op</th><th>reason</th></tr>
{externs}</table>
</body></html>
"""


def _bytes(value: int | None) -> str:
    if value is None:
        return "symbolic"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def _tensor_bytes(nodes: list[fx.Node]) -> int | None:
    total = 0
    for node in nodes:
        meta = node.meta.get("val")
        numel = static_int(meta.numel()) if meta is not None and hasattr(meta, "numel") else None
        if numel is None:
            return None
        total += numel * meta.element_size()
    return total


def build_report(graph_name: str, plan: Plan, refusals: dict[str, str], rewrites: list[str] | None = None) -> FusionReport:
    report = FusionReport(graph=graph_name, refused=dict(refusals), rewrites=list(rewrites or []))
    for step in plan.steps:
        if isinstance(step, FusionGroup):
            written = [n for n in step.outputs for _ in range(step.output_copies.get(n, 1))]
            space = "x".join(str(s) for s in step.space) or "scalar"
            if step.reduced:
                space += f", reducing dims {list(step.reduced)}"
            report.kernels.append(
                KernelRow(
                    name=step.name,
                    kind=step.kind,
                    space=space,
                    ops=[str(n.target) for n in step.nodes],
                    inputs=[n.name for n in step.inputs],
                    outputs=[n.name for n in step.outputs],
                    bytes_read=_tensor_bytes(step.inputs),
                    bytes_written=_tensor_bytes(written),
                )
            )
        elif isinstance(step, ExternCall) and step.node.op == "call_function":
            report.externs.append((step.node.name, step.aten_op or str(step.node.target)))
    return report


def emit_report(report: FusionReport, debug: Any) -> None:
    log.info("%s", report.text().rstrip())
    if debug:
        debug.write("fusion_report.txt", report.text())
        debug.write("fusion_report.html", report.html())
