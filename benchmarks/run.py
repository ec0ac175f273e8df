"""The main job: the seed workloads through eager, Inductor and ait, checked and timed side by side.

    python -m benchmarks.run [--suite seeds|models|all] [--workload simple_mlp,vit_b16_224]
                             [--backends eager,inductor,ait] [--batch 1,32] [--sweep quick|full]
                             [--scale seed|small|tiny] [--out DIR]

On CUDA: every workload of ``benchmarks/workloads.py`` at the seed tables' shapes and precision, a
quick subset of their batch sizes (``--sweep full`` for the seed tables' sweep), backends eager,
inductor, inductor-reduce-overhead and ait. On a CPU-only machine: a small default (ait against eager
on the cheap workloads, under a minute on 2 cores).

``--suite models`` runs the real-model suite instead (``benchmarks/model_suite.py``: torchvision
and Hugging Face models built from code, inference and a training step).

For each (workload, batch size) eager runs first and gives the reference, and the same step in
float64 the accuracy reference; each compiled backend is compiled from a reset state (cold
compile), checked by dynamo's accuracy rule (``torch._dynamo.utils.same`` against eager and float64;
the relative L2 error against eager is recorded too), recompiled after another reset (warm
compile, on-disk caches hit), then timed: median of CUDA-event timings after warm-up, peak
memory, and on CUDA the kernel time per step from a profile (kernel rows summed). A wrong result or a backend error is
printed loudly and makes the exit status 1; the other cases still run.

Writes results.json (after every case, so an interrupted run keeps what it measured), results.md and
PNG plots to ``benchmarks/results/<device>/`` (``--out`` to change) and prints the table.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ait_dynamo import __version__ as ait_version
from ait_dynamo import cache as ait_cache
from ait_dynamo import metrics
from benchmarks import report
from benchmarks.backends import BACKENDS, Backend, default_backends, make_step
from benchmarks import model_suite
from benchmarks.measure import (
    TOLERANCES,
    kernel_time_ms,
    same_as_reference,
    TimingPolicy,
    max_relative_error,
    peak_memory_mib,
    reset_peak_memory,
    run_once,
    synchronize,
    time_step,
)
from benchmarks.workloads import SCALES, SUITES, WORKLOADS, Built, Workload, default_workloads, fp64_copy

REPO = Path(__file__).resolve().parent.parent
_CHECK_SEED = 1234
# Environment variables naming the on-disk compile caches, and their folder in a run's scratch space.
_CACHE_VARIABLES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", help="comma-separated workloads: " + ", ".join(WORKLOADS) +
                        " (default: all on CUDA, the cheap ones on a CPU)")
    parser.add_argument("--backends", help="comma-separated: " + ", ".join(BACKENDS) +
                        " (default: all on CUDA, eager,ait on a CPU)")
    parser.add_argument("--suite", choices=SUITES, default="seeds",
                        help="seeds: the seed documents' workloads (default); models: the real-model suite "
                        "(torchvision and transformers, when installed); all: both")
    parser.add_argument("--batch", help="comma-separated batch sizes for the batched workloads (overrides --sweep)")
    parser.add_argument("--sweep", choices=("quick", "full"), default="quick",
                        help="quick: a few batch sizes per workload (default); full: the seed tables' sweep")
    parser.add_argument("--scale", choices=SCALES, help="shapes: seed (default on CUDA), small (default on a CPU), "
                        "tiny (tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="output folder (default: benchmarks/results/<device>/)")
    parser.add_argument("--warm-compile", choices=("first", "all", "none"), default="first",
                        help="measure warm compile time for the first batch size of a workload (default), all, none")
    parser.add_argument("--time-budget", type=float,
                        help="seconds; a case is not started when it would likely end past the budget (judged by "
                        "the previous batch size of its workload); cases not run are recorded as such")
    parser.add_argument("--keep-caches", action="store_true",
                        help="use the usual Inductor/Triton/ait caches instead of empty ones (cold compile then "
                        "is not cold)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 timed iterations, minimal warm-up")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)

    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    args.scale = args.scale or ("seed" if args.device.type == "cuda" else "small")
    args.workloads = _csv(args.workload) if args.workload else default_workloads(args.device, args.suite)
    for name in args.workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
        if not model_suite.available(name):
            parser.error(f"workload {name!r} needs {model_suite.library_of(name)}: pip install {model_suite.library_of(name)}")
    missing = sorted({model_suite.library_of(n) for n, w in WORKLOADS.items()
                      if w.suite == "models" and args.suite != "seeds" and not model_suite.available(n)} - {None})
    if missing and not args.workload:
        print(f"note: {', '.join(missing)} not installed: its models are left out", file=sys.stderr)
    args.backend_names = _csv(args.backends) if args.backends else default_backends(args.device)
    for name in args.backend_names:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
        if BACKENDS[name].needs_cuda and args.device.type != "cuda":
            parser.error(f"backend {name!r} needs a CUDA device (CUDA graphs)")
    try:
        args.batches = [int(b) for b in _csv(args.batch)] if args.batch else None
    except ValueError:
        parser.error(f"--batch takes comma-separated integers, got {args.batch!r}")
    if args.batches is not None and any(b < 1 for b in args.batches):
        parser.error("--batch sizes must be >= 1")
    return args


def plan_cases(args: argparse.Namespace) -> list[tuple[Workload, int | None]]:
    """Round-robin over workloads by batch index, so that a time budget still covers every workload."""
    per_workload = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        batches = workload.batches_for(args.scale, args.sweep)
        if args.batches is not None and workload.batched:
            batches = tuple(args.batches)
        per_workload.append((workload, batches))
    cases = []
    for index in range(max((len(b) for _, b in per_workload), default=0)):
        cases += [(w, batches[index]) for w, batches in per_workload if index < len(batches)]
    return cases


def environment(args: argparse.Namespace) -> dict[str, Any]:
    device_name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "device_name": device_name,
        "device_type": args.device.type,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda if args.device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ait_dynamo": ait_version,
        "git_commit": commit,
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "scale": args.scale,
        "sweep": "custom" if args.batches else args.sweep,
        "argv": sys.argv[1:],
    }


def _reset_compile_state() -> None:
    torch._dynamo.reset()
    ait_cache.clear_memory_cache()


def _ait_metrics() -> dict[str, Any]:
    """Every counter of ``ait_dynamo.metrics`` (new ones included), plus why graphs fell back."""
    counters = {name: value for name, value in vars(metrics).items()
                if not name.startswith("_") and isinstance(value, int) and not isinstance(value, bool)}
    counters["fallback_reasons"] = sorted({g.fallback_reason for g in metrics.compiled_graphs if g.fallback_reason})
    if metrics.compiled_graphs and hasattr(metrics.compiled_graphs[0], "fused_ops"):
        counters["fused_ops"] = sum(len(g.fused_ops) for g in metrics.compiled_graphs)
    return counters


def _trivial(t: torch.Tensor) -> torch.Tensor:
    return (t + 1).relu()


def _prewarm(backend_names: list[str], device: torch.device, compile_extra: dict[str, dict[str, Any]]) -> None:
    """Compile a trivial function once per backend, so that one-time process costs (Inductor's
    compile worker pool, lazy imports, CUDA context) do not land in the first workload's cold compile."""
    x = torch.ones(8, device=device)
    trivial = Built(_trivial, (x,), "inference", "float32", "8")
    for name in backend_names:
        backend = BACKENDS[name]
        if backend.compile is None:
            continue
        _reset_compile_state()
        try:
            with torch.no_grad():
                backend.compile(_trivial, trivial, compile_extra.get(name, {}))(x)
            synchronize(device)
        except Exception as error:  # noqa: BLE001 - the real cases will report the failure
            print(f"warm-up compile with {name} failed: {error}", file=sys.stderr)
    _reset_compile_state()


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class CaseRunner:
    """Runs every selected backend on one (workload, batch) and returns one record per backend."""

    def __init__(self, args: argparse.Namespace, compile_extra: dict[str, dict[str, Any]]):
        self.args = args
        self.device: torch.device = args.device
        self.policy = TimingPolicy.for_device(self.device, quick=args.quick)
        self.compile_extra = compile_extra
        self._step: Any = None
        self.fp64: list[torch.Tensor] | None = None

    def run(self, workload: Workload, batch: int | None, measure_warm: bool) -> list[dict[str, Any]]:
        torch.manual_seed(0)
        built = workload.build(self.args.scale, batch, self.device)
        base = {"workload": workload.name, "seed": workload.seed, "mode": built.mode, "batch": batch,
                "input": built.input_desc, "precision": built.precision, "model_source": built.model_source}
        # Eager runs first: it is the reference every compiled result is checked against. It is timed
        # and released before the compiled backends run, so that its weights copy (training) and
        # outputs do not count in their peak memory.
        eager = make_step(BACKENDS["eager"], built, {})
        torch.manual_seed(_CHECK_SEED)  # every checked run draws the same random numbers
        run_once(eager, self.device)
        reference = [t.cpu() for t in eager.snapshot()]  # host memory: not in anyone's device peak
        eager.last = []
        self.fp64 = self._fp64_reference(built)
        records: dict[str, dict[str, Any]] = {}
        if "eager" in self.args.backend_names:
            records["eager"] = self._measure(BACKENDS["eager"], built, base, reference, measure_warm, eager)
        del eager
        _cleanup(self.device)
        for name in self.args.backend_names:
            if name != "eager":
                records[name] = self._measure(BACKENDS[name], built, base, reference, measure_warm, None)
        del built, reference
        _cleanup(self.device)
        return [records[name] for name in self.args.backend_names]

    def _fp64_reference(self, built: Built) -> list[torch.Tensor] | None:
        """The same step in float64 from the same weights and inputs (dynamo's accuracy rule judges
        each backend by it); ``None`` where the module has no float64 form."""
        copy64 = fp64_copy(built)
        if copy64 is None:
            return None
        try:
            step = make_step(BACKENDS["eager"], copy64, {})
            torch.manual_seed(_CHECK_SEED)
            run_once(step, self.device)
            return [t.cpu() for t in step.snapshot()]
        except Exception as error:  # noqa: BLE001 - an op without a float64 kernel: judge against eager alone
            print(f"no float64 reference ({type(error).__name__}: {error}); checking against eager only",
                  file=sys.stderr)
            return None
        finally:
            _cleanup(self.device)

    def _measure(self, backend: Backend, built: Any, base: dict[str, Any], reference: list[torch.Tensor],
                 measure_warm: bool, eager_step: Any) -> dict[str, Any]:
        record = {**base, "backend": backend.name, "status": "ok"}
        try:
            if backend.compiled:
                self._compile_and_check(backend, built, record, reference, TOLERANCES[built.precision], measure_warm)
                step = self._step
            else:
                step = eager_step
            self._time(step, record, base["batch"])
        except Exception as error:  # noqa: BLE001 - one backend failing must not stop the others
            record.update(status="error", message=f"{type(error).__name__}: {error}".splitlines()[0][:300])
            traceback.print_exc()
        finally:
            self._step = None
            _reset_compile_state()
            _cleanup(self.device)
        return record

    def _compile_and_check(self, backend: Backend, built: Any, record: dict[str, Any], reference: list[torch.Tensor],
                           tolerance: float, measure_warm: bool) -> None:
        _reset_compile_state()
        metrics.reset()
        self._step = make_step(backend, built, self.compile_extra.get(backend.name, {}))
        torch.manual_seed(_CHECK_SEED)
        record["compile_cold_s"] = run_once(self._step, self.device)
        actual = self._step.snapshot()
        error = max_relative_error(actual, reference)
        self._step.last = []  # drop outputs that may live in a CUDA-graph pool the next reset frees
        record["max_rel_error"] = error
        record["tolerance"] = tolerance
        if backend.name.startswith("ait"):
            record["ait_metrics"] = _ait_metrics()
        if self.fp64 is not None:
            # dynamo's rule against float64: a compiled result may differ from eager as much as
            # eager differs from float64 (mixed precision), never more
            passed, why = same_as_reference(actual, reference, self.fp64, built.precision)
            record["accuracy"] = "pass" if passed else "fail"
            if not passed:
                record["status"] = "wrong"
                record["message"] = f"fails dynamo's accuracy check against float64: {why} (rel. error vs eager {error:.3g})"
        elif error > tolerance:
            record["status"] = "wrong"
            record["message"] = f"relative error {error:.3g} > tolerance {tolerance:g} against eager"
        del actual
        if measure_warm:
            _reset_compile_state()
            record["compile_warm_s"] = run_once(self._step, self.device)

    def _time(self, step: Any, record: dict[str, Any], batch: int | None) -> None:
        synchronize(self.device)
        reset_peak_memory(self.device)
        timing = time_step(step, self.device, self.policy)
        record["peak_mem_mib"] = peak_memory_mib(self.device)
        record["median_ms"] = timing.median_ms
        record["kernel_ms"] = kernel_time_ms(step, self.device)
        record["phases_ms"] = timing.phases_ms
        record["iters"] = timing.iters
        if batch is not None:
            record["items_per_s"] = batch / (timing.median_ms / 1e3)


def _announce_problem(record: dict[str, Any]) -> None:
    banner = "WRONG RESULT" if record["status"] == "wrong" else "BACKEND ERROR"
    print(f"\n!!! {banner}: {record['workload']} batch {record['batch']} backend {record['backend']}: "
          f"{record.get('message')}\n", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out) if args.out else report.RESULTS_ROOT / report.device_slug(
        torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu")
    scratch = None
    compile_extra: dict[str, dict[str, Any]] = {}
    saved_environ = {name: os.environ.get(name) for name in _CACHE_VARIABLES}
    if not args.keep_caches:
        # Empty caches so that the first compile of the run is really cold.
        scratch = tempfile.mkdtemp(prefix="ait_bench_caches_")
        for name, folder in _CACHE_VARIABLES.items():
            os.environ[name] = os.path.join(scratch, folder)
        compile_extra["ait"] = {"cache_dir": os.path.join(scratch, "ait")}

    cases = plan_cases(args)
    results: report.Results = {"schema": report.SCHEMA, "environment": environment(args), "results": []}
    pending = [{"workload": w.name, "seed": w.seed, "mode": w.mode, "batch": b, "backend": name,
                "status": "not run", "message": "not reached (interrupted or over the time budget)"}
               for w, b in cases for name in args.backend_names]
    results["results"] = pending
    json_path = out_dir / "results.json"
    report.write_json(results, json_path)

    _prewarm(args.backend_names, args.device, compile_extra)
    runner = CaseRunner(args, compile_extra)
    started = time.monotonic()
    measured_warm: set[str] = set()
    last_cost: dict[str, float] = {}
    failed = False
    print(f"{len(cases)} cases x {len(args.backend_names)} backends on {results['environment']['device_name']} "
          f"(scale {args.scale}); results in {out_dir}", file=sys.stderr, flush=True)
    try:
        for index, (workload, batch) in enumerate(cases):
            elapsed = time.monotonic() - started
            if args.time_budget is not None and elapsed + last_cost.get(workload.name, 0.0) > args.time_budget:
                # The last batch size of this workload took last_cost seconds: this one will not fit.
                print(f"[{index + 1}/{len(cases)}] {workload.name} batch {batch}: not run (time budget of "
                      f"{args.time_budget:.0f}s, {elapsed:.0f}s spent)", file=sys.stderr, flush=True)
                continue
            case_started = time.monotonic()
            measure_warm = args.warm_compile == "all" or (args.warm_compile == "first" and workload.name not in measured_warm)
            measured_warm.add(workload.name)
            records = runner.run(workload, batch, measure_warm)
            for record in records:
                if record["status"] != "ok":
                    failed = True
                    _announce_problem(record)
            done = {report.case_key(r): r for r in records}
            results["results"] = [done.get(report.case_key(r), r) for r in results["results"]]
            report.write_json(results, json_path)
            summary = ", ".join(f"{r['backend']} {r.get('median_ms', float('nan')):.3f} ms"
                                if r["status"] == "ok" else f"{r['backend']} {r['status'].upper()}" for r in records)
            last_cost[workload.name] = time.monotonic() - case_started
            print(f"[{index + 1}/{len(cases)}] {workload.name} batch {batch}: {summary} "
                  f"({last_cost[workload.name]:.1f}s)", file=sys.stderr, flush=True)
    finally:
        if scratch is not None:
            for name, value in saved_environ.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(scratch, ignore_errors=True)

    print(report.write_outputs(results, out_dir, plots=not args.no_plots))
    if failed:
        print("FAILED: a backend gave a wrong result or an error (see above and the Problems section)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
