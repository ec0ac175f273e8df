"""CUTLASS GEMMs with fused epilogues against cuBLAS, Inductor and ait's Triton template (issue 14),
on one GPU in one process, with nvcc's build times:

    python -m benchmarks cutlass --out DIR        (writes DIR/cutlass_bench.json and .md)
    python3 benchmarks/cutlass_bench.py --out DIR (the same)

Each problem is ``act(x @ W.T + b [+ residual])`` (``nn.Linear``'s layouts). Rows: cuBLAS alone
(``F.linear``, no epilogue: the floor a fused kernel should approach), eager (cuBLAS + separate
epilogue kernels), Inductor's default (cuBLAS + one fused epilogue kernel), ait with
``gemm_backends=("triton",)`` (the template, epilogue fused) and each CUTLASS configuration called
directly. Times are ``triton.testing.do_bench`` medians (kernel and launch time, CUDA events);
rates count 2 M N K flops.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import cutlass_build, cutlass_gemm

# (name, rows M, K, N, dtype, activation, residual): 8192^3 (issue 14's rate target), then the
# GEMM-bound seeds' linear layers: 001's MLP, 002's encoder at batch 128 (196 tokens), ViT-B/16 at
# 128 (197 tokens), ViT-L/16-384 at 16 (577 tokens)
PROBLEMS = (
    ("mm_8192_bf16_bias_gelu", 8192, 8192, 8192, torch.bfloat16, "gelu", False),
    ("mlp001_fc1_gelu", 1024, 512, 2048, torch.float16, "gelu", False),
    ("encoder002_b128_fc1_gelu", 128 * 196, 768, 3072, torch.float16, "gelu", False),
    ("encoder002_b128_fc2_residual_relu", 128 * 196, 3072, 768, torch.float16, "relu", True),
    ("vit_b16_b128_fc1_gelu", 128 * 197, 768, 3072, torch.float16, "gelu", False),
    ("vit_l16_384_b16_fc1_gelu", 16 * 577, 1024, 4096, torch.float16, "gelu", False),
    ("vit_l16_384_b16_fc2_residual", 16 * 577, 4096, 1024, torch.float16, "identity", True),
)


def _bench(fn: Callable[[], Any]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))


def _eager(activation: str, residual: bool) -> Callable[..., torch.Tensor]:
    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r: torch.Tensor | None = None) -> torch.Tensor:
        y = F.linear(x, w, b)
        if r is not None:
            y = y + r
        return cutlass_gemm.apply_activation(y, activation)

    return fn


def sources(problems: tuple = PROBLEMS) -> dict[tuple, list[str]]:
    """(dtype, activation, residual) → the sources of every candidate configuration."""
    kinds = sorted({(p[4], p[5], p[6]) for p in problems}, key=str)
    return {k: [s.source() for s in cutlass_gemm.specs(k[0], "row", "col", k[1], k[2], False)] for k in kinds}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", default="", help="comma-separated problem names")
    parser.add_argument("--no-compilers", action="store_true", help="leave out Inductor and ait's template")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    known = [p[0] for p in PROBLEMS]
    unknown = [name for name in args.only.split(",") if name and name not in known]
    if unknown:
        parser.error(f"unknown problem(s) {', '.join(unknown)}; valid: {', '.join(known)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    check_args(args, parser)
    sys.exit(execute(args))


def execute(args: argparse.Namespace) -> int:
    """``python -m benchmarks cutlass``: see the module doc."""
    if not torch.cuda.is_available():
        print("cutlass: needs a CUDA device", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    cache = AitConfig.create({}, environ={}).cache_dir
    problems = [p for p in PROBLEMS if not args.only or p[0] in args.only.split(",")]
    found = cutlass_build.toolchain()
    print("toolchain:", found, "| device:", torch.cuda.get_device_name(), "| torch", torch.__version__, flush=True)
    by_kind = sources(tuple(problems))
    flat = sorted({s for group in by_kind.values() for s in group})
    cold = [s for s in flat if not os.path.isfile(cutlass_build.library_path(s, cache))]
    started = time.perf_counter()
    built = dict(zip(flat, cutlass_build.build_all(flat, cache)))
    build_s = time.perf_counter() - started
    failures = {s.splitlines()[0]: str(r)[-800:] for s, r in built.items() if isinstance(r, Exception)}
    print(f"built {len(flat)} kernels ({len(cold)} cold) in {build_s:.1f} s on {os.cpu_count()} CPUs; "
          f"failed: {len(failures)}", flush=True)
    for name, error in failures.items():
        print("  FAILED", name, error, flush=True)
    rows: list[dict[str, Any]] = []
    for name, m, k, n, dtype, activation, residual in problems:
        torch.manual_seed(0)
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype) / k ** 0.5
        b = torch.randn(n, device="cuda", dtype=dtype)
        r = torch.randn(m, n, device="cuda", dtype=dtype) if residual else None
        inputs = (x, w, b) + ((r,) if r is not None else ())
        eager = _eager(activation, residual)
        expected = eager(*inputs)
        reference = eager(*(t.double() for t in inputs)).float()
        row: dict[str, Any] = {"problem": name, "m": m, "k": k, "n": n, "dtype": str(dtype), "ms": {}}
        row["ms"]["cublas_linear_only"] = _bench(lambda: F.linear(x, w, b))
        row["ms"]["eager"] = _bench(lambda: eager(*inputs))
        if not args.no_compilers:
            for label, compiled in (("inductor", torch.compile(eager, backend="inductor")),
                                    ("ait_triton", torch.compile(eager, backend="ait",
                                                                 options={"gemm_backends": ("triton",)}))):
                torch._dynamo.reset()
                try:
                    compiled(*inputs)
                    row["ms"][label] = _bench(lambda: compiled(*inputs))
                except Exception as error:  # noqa: BLE001 - a row that fails is reported, not fatal
                    row["ms"][label] = None
                    print(f"  {name} {label} failed: {error}", flush=True)
        errors = {}
        for spec, source in zip(cutlass_gemm.specs(dtype, "row", "col", activation, residual, False),
                                by_kind[(dtype, activation, residual)]):
            library = built[source]
            label = f"cutlass_{spec.schedule.lower()}_{'x'.join(map(str, spec.tile))}_{'x'.join(map(str, spec.cluster))}"
            if isinstance(library, Exception):
                row["ms"][label] = None
                continue

            def call() -> torch.Tensor:
                return cutlass_gemm.run(library, x, w.t(), b, r, activation, 1.0, 1.0, False, strict=True)[0]

            try:
                got = call()
            except RuntimeError as error:
                row["ms"][label] = None
                print(f"  {name} {label}: {error}", flush=True)
                continue
            errors[label] = {"max_abs_vs_fp64": float((got.float() - reference).abs().max()),
                             "eager_max_abs_vs_fp64": float((expected.float() - reference).abs().max())}
            row["ms"][label] = _bench(call)
        row["errors"] = errors
        flops = 2 * m * n * k
        row["tflops"] = {key: (flops / (v * 1e-3) / 1e12 if v else None) for key, v in row["ms"].items()}
        rows.append(row)
        best = min(((v, key) for key, v in row["ms"].items() if key.startswith("cutlass") and v), default=None)
        summary = f"best cutlass {best[1]} {row['tflops'][best[1]]:.0f} TFLOP/s" if best else "no cutlass kernel ran"
        print(f"{name}: " + ", ".join(f"{key} {v:.4f}" for key, v in row["ms"].items() if v)
              + f" | {summary}, cuBLAS alone {row['tflops']['cublas_linear_only']:.0f}", flush=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "triton": __import__("triton").__version__, "nvcc": getattr(found, "nvcc", None),
              "build_s": build_s, "kernels_built": len(flat), "kernels_cold": len(cold), "cpus": os.cpu_count(),
              "build_failures": failures, "rows": rows}
    with open(os.path.join(args.out, "cutlass_bench.json"), "w", encoding="utf-8") as file:
        json.dump(result, file, indent=1)
    lines = [f"# CUTLASS GEMMs, {result['device']}, torch {result['torch']}, triton {result['triton']}", "",
             f"{len(flat)} kernels built ({len(cold)} cold) in {build_s:.1f} s on {os.cpu_count()} CPUs", "",
             "| problem | " + " | ".join(rows[0]["ms"]) + " |", "|---|" + "---:|" * len(rows[0]["ms"])] if rows else []
    for row in rows:
        lines.append(f"| {row['problem']} | " + " | ".join(f"{v:.4f}" if v else "-" for v in row["ms"].values()) + " |")
    with open(os.path.join(args.out, "cutlass_bench.md"), "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    main()
