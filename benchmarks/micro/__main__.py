"""The micro-benchmark cases timed with the main harness (CUDA events), without pytest-benchmark.

    python -m benchmarks.micro [--families pointwise,reduction] [--backends eager,inductor,ait]
                               [--out-dir DIR] [--tiny] [--quick]

Prints a markdown table (median per call, speedup over eager); with ``--out-dir`` also writes
``micro.json`` and ``micro.md`` there. A wrong compiled result fails the run (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.measure import TimingPolicy, time_step
from benchmarks.micro.cases import BACKENDS, CASES, FAMILIES, prepare


class _CallStep:
    phases = ("call",)

    def __init__(self, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...]):
        self.fn, self.inputs = fn, inputs

    def run(self, mark: Callable[[], None]) -> None:
        with torch.no_grad():
            self.fn(*self.inputs)
        mark()


def _table(rows: list[dict[str, Any]], backends: list[str]) -> str:
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["backend"]] = row
    lines = ["| case | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
    for case, cells in by_case.items():
        eager = cells.get("eager", {}).get("median_us")
        texts = []
        for backend in backends:
            row = cells.get(backend)
            if row is None:
                texts.append("")
            elif row["status"] != "ok":
                texts.append(f"**{row['status'].upper()}**")
            else:
                ratio = f" ({eager / row['median_us']:.2f}x)" if eager and backend != "eager" else ""
                texts.append(f"{row['median_us']:.1f} us{ratio}")
        lines.append(f"| {case} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (tests)")
    parser.add_argument("--quick", action="store_true", help="2 timed iterations")
    parser.add_argument("--out-dir")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    families = [f for f in args.families.split(",") if f]
    backends = [b for b in args.backends.split(",") if b]
    for family in families:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    for backend in backends:
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    policy = TimingPolicy.for_device(device, quick=args.quick)
    rows: list[dict[str, Any]] = []
    for case in (c for c in CASES if c.family in families):
        for backend in backends:
            torch._dynamo.reset()
            row: dict[str, Any] = {"case": case.id, "backend": backend, "description": case.description}
            try:
                fn, inputs = prepare(case, backend, device, tiny=args.tiny)
                timing = time_step(_CallStep(fn, inputs), device, policy)
                row.update(status="ok", median_us=timing.median_ms * 1e3, iters=timing.iters)
            except AssertionError as error:
                row.update(status="wrong", message=str(error))
                print(f"\n!!! WRONG RESULT: {error}\n", file=sys.stderr)
            except Exception as error:  # noqa: BLE001 - report and go on with the other cases
                row.update(status="error", message=f"{type(error).__name__}: {error}".splitlines()[0][:300])
                traceback.print_exc()
            rows.append(row)
            print(f"{case.id} {backend}: {row.get('median_us', float('nan')):.1f} us ({row['status']})",
                  file=sys.stderr, flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    text = f"# Micro-benchmarks: {device_name}, torch {torch.__version__}\n\n" + _table(rows, backends) + "\n"
    print(text)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "micro.json").write_text(json.dumps({"device_name": device_name, "torch": torch.__version__,
                                                    "results": rows}, indent=1) + "\n", encoding="utf-8")
        (out / "micro.md").write_text(text, encoding="utf-8")
    return 1 if any(row["status"] != "ok" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
