"""Regression check between two benchmark runs.

    python -m benchmarks compare old.json new.json [--threshold 0.05] [--backends ait]

Matches measurements by (workload, batch size, backend) and flags every one whose median time grew
by more than the threshold (5% by default), and every case that was correct before and is now wrong
or failing. Cases only one run measured are listed, not flagged. Exit status: 0 no regression,
1 regressions found, 2 bad input (unreadable file, or no measurement in common).
(``python -m benchmarks.compare ...`` is the same command.)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from benchmarks.report import Results, case_key, load_results


@dataclass(frozen=True)
class Comparison:
    workload: str
    batch: int | None
    backend: str
    old_ms: float | None
    new_ms: float | None
    verdict: str  # "slower", "faster", "same", "broken", "missing", "new"

    @property
    def ratio(self) -> float | None:
        if self.old_ms and self.new_ms:
            return self.new_ms / self.old_ms
        return None

    @property
    def regression(self) -> bool:
        return self.verdict in ("slower", "broken")


def compare(old: Results, new: Results, threshold: float = 0.05, backends: set[str] | None = None) -> list[Comparison]:
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    old_by_key = {case_key(r): r for r in old["results"]}
    new_by_key = {case_key(r): r for r in new["results"]}
    comparisons = []
    for key in list(old_by_key) + [k for k in new_by_key if k not in old_by_key]:
        workload, batch, backend = key
        if backends is not None and backend not in backends:
            continue
        before, after = old_by_key.get(key), new_by_key.get(key)
        before_ok = before is not None and before.get("status") == "ok"
        after_ok = after is not None and after.get("status") == "ok"
        old_ms = before.get("median_ms") if before_ok else None
        new_ms = after.get("median_ms") if after_ok else None
        if after is not None and after.get("status") in ("wrong", "error"):
            verdict = "broken"
        elif not before_ok and not after_ok:
            continue  # neither run measured it
        elif not after_ok:
            verdict = "missing"
        elif not before_ok:
            verdict = "new"
        elif new_ms > old_ms * (1 + threshold):
            verdict = "slower"
        elif new_ms < old_ms / (1 + threshold):
            verdict = "faster"
        else:
            verdict = "same"
        comparisons.append(Comparison(workload, batch, backend, old_ms, new_ms, verdict))
    return comparisons


def format_table(comparisons: list[Comparison]) -> str:
    lines = ["| workload | batch | backend | old ms | new ms | new / old | verdict |", "|---|---:|---|---:|---:|---:|---|"]
    for c in comparisons:
        old = f"{c.old_ms:.3f}" if c.old_ms else "-"
        new = f"{c.new_ms:.3f}" if c.new_ms else "-"
        ratio = f"{c.ratio:.3f}" if c.ratio else "-"
        verdict = f"**{c.verdict.upper()}**" if c.regression else c.verdict
        batch = "-" if c.batch is None else c.batch
        lines.append(f"| {c.workload} | {batch} | {c.backend} | {old} | {new} | {ratio} | {verdict} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", help="baseline results JSON")
    parser.add_argument("new", help="results JSON to check")
    parser.add_argument("--threshold", type=float, default=0.05, help="allowed slowdown as a fraction (0.05 = 5%%)")
    parser.add_argument("--backends", help="comma-separated backends to compare (default: all)")


def execute(args: argparse.Namespace) -> int:
    try:
        old, new = load_results(args.old), load_results(args.new)
        backends = {b.strip() for b in args.backends.split(",") if b.strip()} if args.backends else None
        comparisons = compare(old, new, args.threshold, backends)
    except ValueError as error:
        print(f"benchmarks.compare: {error}", file=sys.stderr)
        return 2
    old_device, new_device = old["environment"].get("device_name"), new["environment"].get("device_name")
    if old_device != new_device:
        print(f"warning: comparing runs on different devices ({old_device} vs {new_device})", file=sys.stderr)
    print(format_table(comparisons))
    regressions = [c for c in comparisons if c.regression]
    if not any(c.ratio is not None or c.verdict == "broken" for c in comparisons):
        print("benchmarks.compare: the two runs have no measurement in common", file=sys.stderr)
        return 2
    if regressions:
        print(f"\n{len(regressions)} regression(s) beyond {args.threshold:.0%}: "
              + ", ".join(f"{c.workload}/{c.batch}/{c.backend} ({c.verdict})" for c in regressions), file=sys.stderr)
        return 1
    print(f"\nno regression beyond {args.threshold:.0%} in {len(comparisons)} measurements", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from benchmarks import cli

    return cli.alias("compare", argv)


if __name__ == "__main__":
    sys.exit(main())
