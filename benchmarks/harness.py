"""The one path every measuring subcommand runs: build a workload, check each backend, time it.

For each (workload, batch size) eager runs first and gives the reference, and the same step in
float64 the accuracy reference. Each backend is then compiled from a reset state (cold compile
time), checked by dynamo's accuracy rule (``measure.same_as_reference``: against eager and
float64; the relative L2 error against eager is recorded too), recompiled after another reset if
asked (warm compile, on-disk caches hit), then measured: by default ``measure.time_step`` (median
after warm-up), ``measure.peak_memory`` (absolute, and above what was in use before the backend's
first step: parameters, inputs and the step's own copy of the weights) and, on CUDA,
``measure.host_time`` and then ``measure.profile_step`` (kernel time, launches). On a CPU each compiled
backend is instead timed interleaved with eager (``measure.time_interleaved``; on CUDA too with
``--interleave``, the peak memory then from the step run alone): a 2-core machine
shared with other work moves eager itself by up to 2x between runs, so only times taken in the
same window compare; its speedup is the median of the per-round ratios (eager's time over the
backend's in each round), with their quartiles. A subcommand may measure otherwise (``profile`` profiles instead).
A wrong result or an error is a record with that status, printed loudly; the other cases still run.

``add_case_arguments`` / ``resolve_case_arguments`` give the subcommands one set of options for
choosing workloads, backends, batch sizes, scale and device.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ait_dynamo import cache as ait_cache
from ait_dynamo import metrics
from benchmarks import model_suite
from benchmarks.backends import BACKENDS, BackendSpec, fresh_caches, make_step, parse_backends
from benchmarks.measure import (
    TOLERANCES,
    HostTime,
    MemoryUse,
    Timing,
    TimingPolicy,
    host_time,
    profile_step,
    max_relative_error,
    memory_in_use,
    peak_memory,
    peak_of_step_alone,
    run_once,
    same_as_reference,
    synchronize,
    time_interleaved,
    time_step,
)
from benchmarks.recording import Record, Recorder
from benchmarks.workloads import SCALES, WORKLOADS, Built, Workload, fp64_copy

CHECK_SEED = 1234  # every checked run draws the same random numbers

Measure = Callable[[Any, Record, Built, BackendSpec], None]  # (step, record to fill, case, backend)


@dataclass
class Settings:
    device: torch.device
    scale: str
    specs: list[BackendSpec]
    quick: bool = False  # 2 timed iterations, minimal warm-up
    warm_compile: str = "first"  # first | all | none: which batch sizes of a workload get a warm compile
    time_budget: float | None = None  # seconds; a case likely to end past it is not started
    keep_caches: bool = False  # the usual compile caches instead of empty ones
    kernel_time: bool = True  # on CUDA, profile each case for its kernel time
    interleave: bool = False  # on CUDA too, time each compiled backend interleaved with eager (--interleave)


def reset_compile_state() -> None:
    torch._dynamo.reset()
    ait_cache.clear_memory_cache()


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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


def prewarm(specs: list[BackendSpec], device: torch.device) -> None:
    """Compile a trivial function once per backend, so that one-time process costs (Inductor's
    compile worker pool, lazy imports, CUDA context) do not land in the first workload's cold compile."""
    x = torch.ones(8, device=device)
    trivial = Built(_trivial, (x,), "inference", "float32", "8")
    for spec in specs:
        if spec.backend.compile is None:
            continue
        reset_compile_state()
        try:
            with torch.no_grad():
                spec.backend.compile(_trivial, trivial, spec.options)(x)
            synchronize(device)
        except Exception as error:  # noqa: BLE001 - the real cases will report the failure
            print(f"warm-up compile with {spec.label} failed: {error}", file=sys.stderr)
    reset_compile_state()


class CaseRunner:
    """Runs every backend of ``settings`` on one (workload, batch); one record per backend."""

    def __init__(self, settings: Settings, measure: Measure | None = None):
        self.settings = settings
        self.device = settings.device
        self.policy = TimingPolicy.for_device(self.device, quick=settings.quick)
        self.measure = measure or self.time_and_memory
        self._step: Any = None
        self._baseline: MemoryUse | None = None
        self.fp64: list[torch.Tensor] | None = None
        # On a CPU, with the default measurement: eager's step, kept alive to be timed interleaved
        # with each compiled backend, and the eager timings of those windows.
        self._eager_partner: Any = None
        self._eager_timings: list[Any] = []

    def _interleaves(self) -> bool:
        """Whether compiled backends are timed interleaved with eager: on a CPU, and on CUDA where
        asked (``--interleave``: a host-bound step's time follows the speed of the machine's CPU,
        which moved eager's ResNet-50 fp16 batch 32 from 10.355 to 7.311 ms between two H100 runs:
        benchmarks/results/nvidia-h100/session_1205/ and session_1205b/), with the default
        measurement (``profile`` and others measure otherwise)."""
        return (self.device.type != "cuda" or self.settings.interleave) and self.measure == self.time_and_memory

    def run(self, workload: Workload, batch: int | None, measure_warm: bool) -> list[Record]:
        torch.manual_seed(0)
        built = workload.build(self.settings.scale, batch, self.device)
        base = {"workload": workload.name, "seed": workload.seed, "mode": built.mode, "batch": batch,
                "input": built.input_desc, "precision": built.precision, "model_source": built.model_source}
        if built.bytes_moved is not None:
            base["bytes_moved"] = built.bytes_moved
        # Eager runs first: it is the reference every compiled result is checked against. It is timed
        # and released before the compiled backends run, so that its weights copy (training) and
        # outputs do not count in their peak memory.
        eager = make_step(BACKENDS["eager"], built, {})
        eager_baseline = memory_in_use(self.device, fresh_workspaces=True)
        torch.manual_seed(CHECK_SEED)
        run_once(eager, self.device)
        reference = [t.cpu() for t in eager.snapshot()]  # host memory: not in anyone's device peak
        eager.last = []
        self.fp64 = self._fp64_reference(built)
        records: dict[str, Record] = {}
        eager_specs = [spec for spec in self.settings.specs if spec.backend.compile is None]
        compiled_specs = [spec for spec in self.settings.specs if spec.backend.compile is not None]
        interleave = self._interleaves() and bool(eager_specs) and bool(compiled_specs)
        if interleave:
            # eager is timed beside each compiled backend (time_and_memory), and its record made last
            self._eager_partner, self._eager_timings = eager, []
        else:
            for spec in eager_specs:
                self._baseline = eager_baseline
                records[spec.label] = self._measure(spec, built, base, reference, measure_warm, eager)
            del eager
            cleanup(self.device)
        for spec in compiled_specs:
            records[spec.label] = self._measure(spec, built, base, reference, measure_warm, None)
        if interleave:
            for spec in eager_specs:
                self._baseline = eager_baseline
                records[spec.label] = self._measure(spec, built, base, reference, measure_warm, eager)
            self._eager_partner, self._eager_timings = None, []
            del eager
        del built, reference
        cleanup(self.device)
        return [records[spec.label] for spec in self.settings.specs]

    def _fp64_reference(self, built: Built) -> list[torch.Tensor] | None:
        """The same step in float64 from the same weights and inputs (dynamo's accuracy rule judges
        each backend by it); ``None`` where the module has no float64 form."""
        copy64 = fp64_copy(built)
        if copy64 is None:
            return None
        try:
            step = make_step(BACKENDS["eager"], copy64, {})
            torch.manual_seed(CHECK_SEED)
            run_once(step, self.device)
            return [t.cpu() for t in step.snapshot()]
        except Exception as error:  # noqa: BLE001 - an op without a float64 kernel: judge against eager alone
            print(f"no float64 reference ({type(error).__name__}: {error}); checking against eager only",
                  file=sys.stderr)
            return None
        finally:
            cleanup(self.device)

    def _measure(self, spec: BackendSpec, built: Built, base: Record, reference: list[torch.Tensor],
                 measure_warm: bool, eager_step: Any) -> Record:
        record: Record = {**base, "backend": spec.label, "status": "ok"}
        try:
            if spec.backend.compile is not None:
                self._compile_and_check(spec, built, record, reference, measure_warm)
                step = self._step
            else:
                step = eager_step
            self.measure(step, record, built, spec)
        except Exception as error:  # noqa: BLE001 - one backend failing must not stop the others
            record.update(status="error", message=f"{type(error).__name__}: {error}".splitlines()[0][:300])
            traceback.print_exc()
        finally:
            self._step = None
            reset_compile_state()
            cleanup(self.device)
        return record

    def _compile_and_check(self, spec: BackendSpec, built: Built, record: Record, reference: list[torch.Tensor],
                           measure_warm: bool) -> None:
        from ait_dynamo.partitioners import REPORTS

        reset_compile_state()
        metrics.reset()
        REPORTS.clear()
        self._step = make_step(spec.backend, built, spec.options)
        self._baseline = memory_in_use(self.device, fresh_workspaces=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(CHECK_SEED)
            record["compile_cold_s"] = run_once(self._step, self.device)
        # ait's own warnings (a graph falling back to ATen, a memory budget it cannot meet) belong
        # in the results, not only in a log
        notes = sorted({str(w.message).splitlines()[0][:200] for w in caught if "ait_dynamo" in str(w.message)})
        for note in notes:
            print(f"note ({spec.label}): {note}", file=sys.stderr)
        for w in caught:  # the others as they would have been shown
            if "ait_dynamo" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if notes:
            record["notes"] = notes
        actual = self._step.snapshot()
        error = max_relative_error(actual, reference)
        self._step.last = []  # drop outputs that may live in a CUDA-graph pool the next reset frees
        tolerance = TOLERANCES.get(built.precision, TOLERANCES["float32"])
        record["max_rel_error"] = error
        record["tolerance"] = tolerance
        if spec.backend.takes_options:
            record["ait_metrics"] = _ait_metrics()
            if REPORTS:
                record["saved_mib"] = sum(r.saved_bytes for r in REPORTS) / 2**20
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
            reset_compile_state()
            record["compile_warm_s"] = run_once(self._step, self.device)

    def time_and_memory(self, step: Any, record: Record, built: Built, spec: BackendSpec) -> None:
        """The default measurement: time, peak memory (absolute and above the backend's baseline)
        and kernel time."""
        synchronize(self.device)
        timing = self._time(step, record, spec)
        record["median_ms"] = timing.median_ms
        record["phases_ms"] = timing.phases_ms
        record["iters"] = timing.iters
        if self._eager_partner is not None and self.device.type == "cuda":
            # interleaved, eager's steps ran in the timed window too: the peak is the step's alone
            peak_of_step_alone(step, self.device)
        peak, above = peak_memory(self.device), peak_memory(self.device, since=self._baseline)
        if peak is not None and above is not None:
            record.update(peak_mem_mib=peak.allocated_mib, peak_reserved_mib=peak.reserved_mib,
                          above_inputs_mib=above.allocated_mib, reserved_above_inputs_mib=above.reserved_mib)
        record["kernel_ms"] = host = None
        if self.settings.kernel_time and self.device.type == "cuda":
            # Host time before the profile: after a torch.profiler session the process issues work
            # slower for a while (on the H200, eager's host time taken after the profile was 366 us
            # per step against a wall time of 309 us taken before it, and 265 us in a plain loop:
            # benchmarks/results/nvidia-h200/host_time/).
            enqueue = host_time(step, self.device, launches=0.0)
            profiled = profile_step(step, self.device)  # one trace: kernel time and launch count
            record["kernel_ms"] = sum(row.ms for row in profiled.rows)
            if enqueue is not None:
                host = HostTime(enqueue.enqueue_us, profiled.launches or 0.0)
        if host is not None:
            record.update(host_us=host.enqueue_us, launches=host.launches, us_per_launch=host.us_per_launch)
        if record.get("batch") is not None:
            record["items_per_s"] = record["batch"] / (timing.median_ms / 1e3)
        if built.bytes_moved is not None:
            record["gbps"] = built.bytes_moved / timing.median_ms / 1e6


    def _time(self, step: Any, record: Record, spec: BackendSpec) -> Any:
        """``time_step``, or on a CPU (``_interleaves``) ``time_interleaved`` with eager's step:
        a compiled backend's record gets eager's median of the same window and its speedup over
        eager (``speedup_vs_eager``: the median of the per-round ratios, with their quartiles);
        eager's record, made last, the median of all its interleaved iterations."""
        partner = self._eager_partner
        if partner is None:
            return time_step(step, self.device, self.policy)
        if step is partner:
            if not self._eager_timings:  # every compiled backend failed before its timing
                return time_step(step, self.device, self.policy)
            samples = list(self._eager_timings)
            record["timing"] = f"interleaved with {len(samples)} compiled backend(s)"
            return Timing(statistics.median(t.median_ms for t in samples),
                          {name: statistics.median(t.phases_ms[name] for t in samples) for name in samples[0].phases_ms},
                          sum(t.iters for t in samples), ())
        eager_timing, timing = time_interleaved([partner, step], self.device, self.policy)
        self._eager_timings.append(eager_timing)
        # The median of the per-round ratios: each round compares the two under the same load,
        # where pooled medians may each come from another load when the machine's drifts
        ratios = [e / b for e, b in zip(eager_timing.round_ms, timing.round_ms) if b > 0]
        record.update(timing=f"interleaved with eager, {len(timing.round_ms)} rounds",
                      eager_same_window_ms=eager_timing.median_ms,
                      speedup_vs_eager=statistics.median(ratios) if ratios else eager_timing.median_ms / timing.median_ms)
        if len(ratios) >= 4:
            quartiles = statistics.quantiles(ratios, n=4)
            record["speedup_round_quartiles"] = [quartiles[0], quartiles[2]]
        return timing


def announce_problem(record: Record) -> None:
    banner = "WRONG RESULT" if record["status"] == "wrong" else "BACKEND ERROR"
    print(f"\n!!! {banner}: {record['workload']} batch {record['batch']} backend {record['backend']}: "
          f"{record.get('message')}\n", file=sys.stderr, flush=True)


def plan_cases(workloads: list[str], scale: str, sweep: str, batches: list[int] | None) -> list[tuple[Workload, int | None]]:
    """Round-robin over workloads by batch index, so that a time budget still covers every workload."""
    per_workload = []
    for name in workloads:
        workload = WORKLOADS[name]
        chosen = workload.batches_for(scale, sweep)
        if batches is not None and workload.batched:
            chosen = tuple(batches)
        per_workload.append((workload, chosen))
    cases = []
    for index in range(max((len(b) for _, b in per_workload), default=0)):
        cases += [(w, chosen[index]) for w, chosen in per_workload if index < len(chosen)]
    return cases


def run_cases(cases: list[tuple[Workload, int | None]], settings: Settings, recorder: Recorder,
              runner: CaseRunner | None = None) -> bool:
    """Every case through ``runner`` (a default ``CaseRunner``), each record saved as it comes,
    cases not started recorded as "not run"; with fresh compile caches unless asked to keep them.
    True if any record is wrong or an error."""
    labels = [spec.label for spec in settings.specs]
    recorder.put({"workload": w.name, "seed": w.seed, "mode": w.mode, "batch": b, "backend": label,
                  "status": "not run", "message": "not reached (interrupted or over the time budget)"}
                 for w, b in cases for label in labels)
    runner = runner or CaseRunner(settings)
    failed = False
    print(f"{len(cases)} cases x {len(labels)} backends on {recorder.environment.get('device_name')} "
          f"(scale {settings.scale})" + (f"; results in {recorder.path}" if recorder.path else ""),
          file=sys.stderr, flush=True)
    with fresh_caches(keep=settings.keep_caches):
        prewarm(settings.specs, settings.device)
        started = time.monotonic()
        measured_warm: set[str] = set()
        last_cost: dict[str, float] = {}
        for index, (workload, batch) in enumerate(cases):
            elapsed = time.monotonic() - started
            if settings.time_budget is not None and elapsed + last_cost.get(workload.name, 0.0) > settings.time_budget:
                # The last batch size of this workload took last_cost seconds: this one will not fit.
                print(f"[{index + 1}/{len(cases)}] {workload.name} batch {batch}: not run (time budget of "
                      f"{settings.time_budget:.0f}s, {elapsed:.0f}s spent)", file=sys.stderr, flush=True)
                continue
            case_started = time.monotonic()
            measure_warm = settings.warm_compile == "all" or (
                settings.warm_compile == "first" and workload.name not in measured_warm)
            measured_warm.add(workload.name)
            records = runner.run(workload, batch, measure_warm)
            for record in records:
                if record["status"] != "ok":
                    failed = True
                    announce_problem(record)
            recorder.put(records)
            summary = ", ".join(f"{r['backend']} {r['median_ms']:.3f} ms" if r["status"] == "ok" and "median_ms" in r
                                else f"{r['backend']} {r['status'].upper()}" for r in records)
            last_cost[workload.name] = time.monotonic() - case_started
            print(f"[{index + 1}/{len(cases)}] {workload.name} batch {batch}: {summary} "
                  f"({last_cost[workload.name]:.1f}s)", file=sys.stderr, flush=True)
    return failed


# --- the options every measuring subcommand shares ---------------------------------------------


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def add_case_arguments(parser: argparse.ArgumentParser, warm_compile: str = "first", timing: bool = True) -> None:
    """The shared options; ``timing=False`` leaves out those only a timed run reads (warm compile,
    time budget, caches, --quick)."""
    parser.add_argument("--workload", help="comma-separated workload names (see benchmarks/workloads.py; "
                        "default: the subcommand's set)")
    parser.add_argument("--backends", help="comma-separated: " + ", ".join(BACKENDS) +
                        "; ait backends take options: ait+memory_budget=0.5+cuda_graphs=true")
    parser.add_argument("--batch", help="comma-separated batch sizes for the batched workloads (overrides --sweep)")
    parser.add_argument("--scale", choices=SCALES, help="shapes: seed (default on CUDA), small (default on a CPU), "
                        "tiny (tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    if not timing:
        parser.set_defaults(warm_compile="none", time_budget=None, keep_caches=True, quick=False, interleave=False)
        return
    parser.add_argument("--warm-compile", choices=("first", "all", "none"), default=warm_compile,
                        help=f"measure warm compile time for the first batch size of a workload, all, none "
                        f"(default {warm_compile})")
    parser.add_argument("--time-budget", type=float,
                        help="seconds; a case is not started when it would likely end past the budget (judged by "
                        "the previous batch size of its workload); cases not run are recorded as such")
    parser.add_argument("--keep-caches", action="store_true",
                        help="use the usual Inductor/Triton/ait caches instead of empty ones (cold compile then "
                        "is not cold)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 timed iterations, minimal warm-up")
    parser.add_argument("--interleave", action="store_true",
                        help="on CUDA too, time each compiled backend in alternating rounds with eager (as on a "
                        "CPU): its speedup is the median of the per-round ratios, robust to the host CPU's "
                        "drift that moves host-bound steps; peak memory then comes from the step run alone")


def resolve_case_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser,
                           default_workloads: Callable[[torch.device], list[str]],
                           default_backends: Callable[[torch.device], list[str]],
                           accept: Callable[[Workload], str | None] = lambda workload: None) -> None:
    """Check the shared options and resolve them in place: ``device``, ``scale``, ``workloads``
    (names), ``specs`` (``BackendSpec``), ``batches``. ``accept`` returns why a named workload
    does not suit the subcommand (``None``: it does)."""
    try:
        args.device = torch.device(args.device)
    except RuntimeError as error:
        parser.error(f"--device: {error}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    args.scale = args.scale or ("seed" if args.device.type == "cuda" else "small")
    args.workloads = _csv(args.workload) if args.workload else default_workloads(args.device)
    if not args.workloads:
        parser.error("no workload to run")
    for name in args.workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; valid: {', '.join(WORKLOADS)}")
        if not model_suite.available(name):
            parser.error(f"workload {name!r} needs {model_suite.library_of(name)}: pip install {model_suite.library_of(name)}")
        why = accept(WORKLOADS[name])
        if why:
            parser.error(f"workload {name!r}: {why}")
    try:
        args.specs = parse_backends(args.backends or ",".join(default_backends(args.device)), args.device)
    except ValueError as error:
        parser.error(str(error))
    try:
        args.batches = [int(b) for b in _csv(args.batch)] if args.batch else None
    except ValueError:
        parser.error(f"--batch takes comma-separated integers, got {args.batch!r}")
    if args.batches is not None and any(b < 1 for b in args.batches):
        parser.error("--batch sizes must be >= 1")
    if args.time_budget is not None and args.time_budget <= 0:
        parser.error("--time-budget must be > 0 seconds")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(args.device, args.scale, args.specs, quick=args.quick, warm_compile=args.warm_compile,
                    time_budget=args.time_budget, keep_caches=args.keep_caches,
                    interleave=args.interleave)

