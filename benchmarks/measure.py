"""Timing, memory and correctness primitives of every benchmark subcommand: one of each.

- ``time_step``: the timing function. A step is anything with ``phases`` (names) and ``run(mark)``,
  where ``run`` calls ``mark()`` once after each phase. On CUDA every mark records an event on the
  current stream, so one iteration is timed on the GPU from its first launch to its last kernel,
  gaps for Python launch overhead included (what a caller waiting on the result sees). On a CPU,
  marks read ``perf_counter``.
- ``time_interleaved``: several steps timed in alternating rounds (the CPU's timing function for
  comparisons): on a CPU shared with other work, the speed of the machine itself drifts by up to
  2x between runs, so steps timed one after the other compare different machines; interleaved,
  every step sees the same drift, and the ratio of their medians means something.
- ``peak_memory``: the peak-memory function (CUDA), read after ``time_step`` (which starts the
  allocator's peak statistics afresh after its warm-up), or after ``peak_of_step_alone`` where the
  step was timed interleaved, and taken above a ``memory_in_use`` baseline.
- ``kernel_profile`` / ``kernel_time_ms``: the kernel-time function, from a torch.profiler trace.
- ``same_as_reference``: the accuracy rule (dynamo's, through ``ait_dynamo.accuracy``), with
  ``TOLERANCES`` and ``relative_error`` for the error figures the tables show.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch


class Step(Protocol):
    phases: tuple[str, ...]

    def run(self, mark: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class TimingPolicy:
    """How long to warm up and to measure. Iteration counts adapt to the step's duration."""

    warmup_s: float = 0.2
    min_warmup_iters: int = 3
    measure_s: float = 0.5
    min_iters: int = 10
    max_iters: int = 300
    # time_interleaved: each round runs every step for about round_s (at least one iteration)
    round_s: float = 0.03
    min_rounds: int = 10

    @staticmethod
    def for_device(device: torch.device, quick: bool = False) -> "TimingPolicy":
        if quick:
            return TimingPolicy(warmup_s=0.0, min_warmup_iters=1, measure_s=0.0, min_iters=2, max_iters=2)
        if device.type == "cuda":
            return TimingPolicy()
        # measure_s is per step; interleaved, 2 steps of the CPU main job's 5 cases take about 5 s
        return TimingPolicy(warmup_s=0.1, min_warmup_iters=2, measure_s=0.5, min_iters=5, max_iters=200)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    phases_ms: dict[str, float]  # median of each phase
    iters: int
    round_ms: tuple[float, ...] = ()  # time_interleaved: the median iteration of each round, in order


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(step: Step, device: torch.device) -> float:
    """Run one iteration; wall-clock seconds including synchronization."""
    begin = time.perf_counter()
    step.run(lambda: None)
    synchronize(device)
    return time.perf_counter() - begin


def _one_timed_iteration(step: Step, device: torch.device) -> list[float]:
    """Phase durations in milliseconds."""
    if device.type == "cuda":
        # Created before the first record: nothing but the step runs between two events.
        events = [torch.cuda.Event(enable_timing=True) for _ in range(len(step.phases) + 1)]
        marked = 1
        events[0].record()

        def mark() -> None:
            nonlocal marked
            if marked == len(events):
                raise RuntimeError(f"step marked more phases than it declares: {step.phases}")
            events[marked].record()
            marked += 1

        step.run(mark)
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in zip(events[:marked], events[1:marked])]
    stamps = [time.perf_counter()]
    step.run(lambda: stamps.append(time.perf_counter()))
    return [(end - start) * 1e3 for start, end in zip(stamps, stamps[1:])]


def time_step(step: Step, device: torch.device, policy: TimingPolicy) -> Timing:
    """Median time per iteration after warm-up. On CUDA the allocator's cache is emptied and its
    peak statistics reset between warm-up and measurement, so that ``peak_memory`` read afterwards
    is the steady state of the timed iterations (CUDA-graph capture, first-call workspaces and
    compilation happen in the warm-up)."""
    per_iter_s = _warm_up(step, device, policy)
    if per_iter_s > 0:
        iters = max(policy.min_iters, min(policy.max_iters, math.ceil(policy.measure_s / max(per_iter_s, 1e-6))))
    else:  # no warm-up asked for (a step that is never the same twice, as a partition of a fresh copy)
        iters = policy.min_iters
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    samples = [_timed_phases(step, device) for _ in range(iters)]
    return _summary(step, samples)


def _warm_up(step: Step, device: torch.device, policy: TimingPolicy) -> float:
    """Run ``step`` for the policy's warm-up; seconds per iteration (0.0 without warm-up)."""
    begin = time.perf_counter()
    iters = 0
    while iters < policy.min_warmup_iters or time.perf_counter() - begin < policy.warmup_s:
        step.run(lambda: None)
        synchronize(device)
        iters += 1
    return (time.perf_counter() - begin) / iters if iters else 0.0


def _timed_phases(step: Step, device: torch.device) -> list[float]:
    phases = _one_timed_iteration(step, device)
    if len(phases) != len(step.phases):
        raise RuntimeError(f"step marked {len(phases)} phases, declares {len(step.phases)}: {step.phases}")
    return phases


def _summary(step: Step, samples: list[list[float]], round_ms: tuple[float, ...] = ()) -> Timing:
    totals = [sum(sample) for sample in samples]
    per_phase = {name: statistics.median(s[i] for s in samples) for i, name in enumerate(step.phases)}
    return Timing(statistics.median(totals), per_phase, len(samples), round_ms)


def time_interleaved(steps: Sequence[Step], device: torch.device, policy: TimingPolicy) -> list[Timing]:
    """Each step's median time per iteration, the steps timed in alternating rounds after each
    one's warm-up. A round runs every step for about ``policy.round_s`` (the same number of
    iterations each round); the order within a round alternates (ABBA...), so that no step always
    runs right after the same other one. ``Timing.round_ms`` holds each round's median, for the
    spread of the per-round ratios. Rounds: at least ``min_rounds``, enough for ``measure_s`` per
    step, and no more than ``max_iters`` iterations of any step."""
    if not steps:
        return []
    per_iter_s = [_warm_up(step, device, policy) for step in steps]
    repeats = [max(1, int(policy.round_s / s)) if s > 0 else 1 for s in per_iter_s]
    round_s = max(r * s for r, s in zip(repeats, per_iter_s))
    rounds = max(policy.min_rounds, math.ceil(policy.measure_s / round_s) if round_s > 0 else policy.min_iters)
    rounds = min(rounds, max(1, policy.max_iters // max(repeats)))
    if policy.measure_s == 0.0:  # a smoke run: the fewest iterations asked for
        rounds, repeats = policy.min_iters, [1] * len(steps)
    samples: list[list[list[float]]] = [[] for _ in steps]
    round_ms: list[list[float]] = [[] for _ in steps]
    for index in range(rounds):
        order = range(len(steps)) if index % 2 == 0 else reversed(range(len(steps)))
        for which in order:
            these = [_timed_phases(steps[which], device) for _ in range(repeats[which])]
            samples[which] += these
            round_ms[which].append(statistics.median(sum(sample) for sample in these))
    return [_summary(step, s, tuple(r)) for step, s, r in zip(steps, samples, round_ms)]


@dataclass(frozen=True)
class MemoryUse:
    allocated_mib: float
    reserved_mib: float  # also counts the free blocks of CUDA-graph pools, which nothing else can use


def memory_in_use(device: torch.device, fresh_workspaces: bool = False) -> MemoryUse | None:
    """What the CUDA allocator holds now, after emptying its cache: the baseline a step's peak is
    taken above (``None`` on a CPU, whose allocator keeps no statistics). ``fresh_workspaces``
    also frees cuBLAS's per-handle workspaces (about 32 MiB each on the H200; a CUDA-graph capture
    allocates its own), so that every backend measured after the baseline pays its own."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    if fresh_workspaces:
        getattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: None)()
    torch.cuda.empty_cache()
    return MemoryUse(torch.cuda.memory_allocated(device) / 2**20, torch.cuda.memory_reserved(device) / 2**20)


def peak_of_step_alone(step: Step, device: torch.device, iters: int = 2) -> None:
    """Start the allocator's peak statistics afresh and run ``step`` alone ``iters`` times, so that
    ``peak_memory`` read next is this step's steady state: after ``time_interleaved`` the window
    held another step's iterations too."""
    if device.type != "cuda":
        return
    synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(iters):
        run_once(step, device)


def peak_memory(device: torch.device, since: MemoryUse | None = None) -> MemoryUse | None:
    """The allocator's peak since its statistics were last reset (by ``time_step``: the timed
    iterations), above ``since`` when given; ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    allocated = torch.cuda.max_memory_allocated(device) / 2**20
    reserved = torch.cuda.max_memory_reserved(device) / 2**20
    if since is not None:
        allocated, reserved = allocated - since.allocated_mib, reserved - since.reserved_mib
    return MemoryUse(allocated, reserved)


@dataclass(frozen=True)
class KernelRow:
    name: str
    ms: float  # per iteration
    calls: float  # per iteration


# The CUDA runtime/driver calls that put a kernel on a stream, as torch.profiler names them.
_LAUNCH_EVENTS = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                  "cudaLaunchCooperativeKernel", "cudaGraphLaunch"}


@dataclass(frozen=True)
class StepProfile:
    rows: list[KernelRow]  # longest first (see ``kernel_profile``)
    launches: float | None  # kernel launches per iteration (CUDA; ``None`` on a CPU)


def profile_step(step: Step, device: torch.device, iters: int = 5) -> StepProfile:
    """One torch.profiler trace of ``iters`` iterations: the kernel rows (``kernel_profile``) and,
    on CUDA, the launches per iteration counted from the host's runtime calls (``host_time``)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            step.run(lambda: None)
        synchronize(device)
    total_us: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    launches = 0
    for event in prof.events():
        if cuda and event.name in _LAUNCH_EVENTS:
            launches += 1
        if cuda and event.device_type == DeviceType.CUDA:
            total_us[event.name] += event.device_time
        elif not cuda and event.device_type == DeviceType.CPU and event.name.startswith("aten::"):
            total_us[event.name] += event.self_cpu_time_total
        else:
            continue
        calls[event.name] += 1
    rows = [KernelRow(name, us / 1e3 / iters, calls[name] / iters) for name, us in total_us.items()]
    return StepProfile(sorted(rows, key=lambda row: -row.ms), launches / iters if cuda else None)


def kernel_profile(step: Step, device: torch.device, iters: int = 5) -> list[KernelRow]:
    """Where a step's compute time goes, longest first, from a torch.profiler trace of ``iters``
    iterations. On CUDA the rows are the kernels (and copies) the device ran, each once (the ATen
    op that launched a kernel and the ranges around compiled regions are not rows: they would count
    it twice). On a CPU they are the ATen ops by self time, which is where a CPU computes."""
    return profile_step(step, device, iters).rows


def kernel_time_ms(step: Step, device: torch.device, iters: int = 5) -> float | None:
    """GPU kernel time per iteration, the kernel rows of ``kernel_profile`` summed: beside the wall
    time, it tells a host-bound step from a kernel-bound one. ``None`` on a CPU, where the host
    computes and the wall time is the figure."""
    if device.type != "cuda":
        return None
    return sum(row.ms for row in kernel_profile(step, device, iters))


@dataclass(frozen=True)
class HostTime:
    enqueue_us: float  # CPU time to issue one step (median), the GPU left to run behind it
    launches: float  # kernel launches per step (a CUDA graph replay counts as one)

    @property
    def us_per_launch(self) -> float | None:
        return self.enqueue_us / self.launches if self.launches else None


def host_time(step: Step, device: torch.device, iters: int = 20, launches: float | None = None) -> HostTime | None:
    """Host overhead of a step on CUDA (issue 12): the CPU time from its first call to its return,
    without waiting for the GPU (each step starts on an idle queue, so a launch never waits for
    queue space), and its kernel launches counted in a profile. ``us_per_launch`` is everything
    the host does per step (Python, guards, allocations, ATen dispatch) divided by the launches:
    the figure to hold against Inductor's, measured the same way. ``launches``: the count from a
    ``profile_step`` already taken, else this profiles. ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    samples = []
    for _ in range(iters):
        synchronize(device)
        begin = time.perf_counter()
        step.run(lambda: None)
        samples.append((time.perf_counter() - begin) * 1e6)
    if launches is None:
        launches = profile_step(step, device, iters=3).launches
    return HostTime(statistics.median(samples), launches or 0.0)


def same_as_reference(actual: Sequence[torch.Tensor], eager: Sequence[torch.Tensor], fp64: Sequence[torch.Tensor],
                      precision: str) -> tuple[bool, str]:
    """Dynamo's accuracy rule per output (``ait_dynamo.accuracy``): close to eager, or no further
    from float64 than eager is. (passed, what failed)."""
    from ait_dynamo import accuracy

    if not (len(actual) == len(eager) == len(fp64)):
        return False, f"{len(actual)} outputs, eager {len(eager)}, float64 {len(fp64)}"
    dtype = torch.bfloat16 if precision == "amp-bfloat16" else getattr(torch, precision, torch.float32)
    for index, (a, e, r) in enumerate(zip(actual, eager, fp64)):
        a, e, r = a.detach().cpu(), e.detach().cpu(), r.detach().cpu()
        if not accuracy.agrees(e, a, r, accuracy.tolerance(dtype)):
            return False, f"output {index} of {len(actual)} ({tuple(a.shape)} {a.dtype}) fails against float64"
    return True, ""


# Relative L2 error allowed between a compiled backend and eager, per precision. Loose enough for
# a different summation order over dozens of layers, tight enough that a wrong op (a lost residual,
# a wrong scale, a stale buffer) fails: those give errors of order 1.
TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2, "amp-bfloat16": 5e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``||actual - expected|| / ||expected||`` in float64; ``inf`` for a shape mismatch or NaN."""
    if actual.shape != expected.shape:
        return math.inf
    if not expected.is_floating_point():
        return 0.0 if torch.equal(actual, expected) else math.inf
    a, e = actual.detach().double(), expected.detach().to(actual.device).double()
    error = ((a - e).norm() / e.norm().clamp_min(1e-30)).item()
    return error if math.isfinite(error) else math.inf


def max_relative_error(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    if len(actual) != len(expected):
        return math.inf
    return max((relative_error(a, e) for a, e in zip(actual, expected)), default=0.0)
