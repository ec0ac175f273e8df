"""Which form of a Triton launch is cheapest inside a real wrapper (issue 12): GPT-2's training step
(the model suite's hf_gpt2_train), with every bound launch site of ait's wrappers rebound in turn to
each form, timed interleaved in one process beside Inductor. A micro-benchmark that repeats one
launch gives 4-5 us for every form (host_calls.py); inside GPT-2's backward a launch line costs
35 us against Inductor's 11.5 (benchmarks/wrapper_lines.py), so the forms are compared where that
happens. From the repository root on the GPU machine:

    python3 benchmarks/results/nvidia-h200/host_calls/launch_variants.py [workload]
"""

import gc
import statistics
import sys
import time
from typing import Any, Callable

import torch
import triton

from benchmarks import harness
from benchmarks.backends import parse_backends
from benchmarks.measure import synchronize
from benchmarks.workloads import WORKLOADS
from ait_dynamo.kernels import launch_site

ROUNDS, STEPS = 5, 5


def sites() -> list[launch_site.LaunchSite]:
    found = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, launch_site.LaunchSite) and obj.bound is not None:
                found.append(obj)
        except ReferenceError:
            pass
    return found


def variant(site: launch_site.LaunchSite, form: str) -> Callable[..., None]:
    launched = site.bound
    compiled = launched.compiled
    run, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
    gx, gy, gz = launched.grid
    numels = {"pointwise": (site.xnumel,), "reduction": (site.xnumel, site.rnumel), "gemm": ()}[site.kind]
    tail = numels + launched.constexprs
    stream = torch._C._cuda_getCurrentRawStream
    device = torch.cuda.current_device()
    tensors = site.tensors
    if form == "run, no checks":
        def call(*args: Any) -> None:
            run(gx, gy, gz, stream(device), function, metadata, None, None, None, *args, *tail)
        return call
    launch = run.launch
    coop, pdl = run.launch_cooperative_grid, run.launch_pdl
    if form == "module, tensors":
        def call(*args: Any) -> None:
            launch(gx, gy, gz, stream(device), function, coop, pdl, None, None, metadata, None, None, None, *args, *tail)
        return call
    if form == "module, addresses":
        def call(*args: Any) -> None:
            launch(gx, gy, gz, stream(device), function, coop, pdl, None, None, metadata, None, None, None,
                   *[a.data_ptr() for a in args[:tensors]], *args[tensors:], *tail)
        return call
    raise ValueError(form)


def host_ms(step: Any, device: torch.device) -> float:
    synchronize(device)
    begin = time.perf_counter()
    for _ in range(STEPS):
        step.run(lambda: None)
    elapsed = (time.perf_counter() - begin) * 1e3 / STEPS
    synchronize(device)
    return elapsed


def measure(step: Any, record: Any, built: Any, spec: Any) -> None:
    device = torch.device("cuda")
    for _ in range(3):
        step.run(lambda: None)
    if not spec.label.startswith("ait"):
        times = [host_ms(step, device) for _ in range(ROUNDS)]
        print(f"{spec.label}: host ms/step median {statistics.median(times):.2f} ({', '.join(f'{t:.1f}' for t in times)})")
        return
    bound = [s for s in sites() if s.launch is not launch_site._retired]
    scratch = [s for s in bound if s.bound.compiled.run.global_scratch_size or s.bound.compiled.run.profile_scratch_size]
    print(f"ait: {len(bound)} direct sites, {len(scratch)} with scratch (kept on the current form)")
    forms = {"current": {s: s.launch for s in bound}}
    for form in ("run, no checks", "module, tensors", "module, addresses"):
        forms[form] = {s: (s.launch if s in scratch else variant(s, form)) for s in bound}
    results: dict[str, list[float]] = {form: [] for form in forms}
    for _ in range(ROUNDS):
        for form, launches in forms.items():
            for s, launch in launches.items():
                s.launch = launch
            results[form].append(host_ms(step, device))
    for s, launch in forms["current"].items():
        s.launch = launch
    for form, times in results.items():
        print(f"ait, {form}: host ms/step median {statistics.median(times):.2f} ({', '.join(f'{t:.1f}' for t in times)})")


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    name = sys.argv[1] if len(sys.argv) > 1 else "hf_gpt2_train"
    device = torch.device("cuda")
    workload = WORKLOADS[name]
    settings = harness.Settings(device=device, scale="seed", specs=parse_backends("ait,inductor", device), kernel_time=False)
    runner = harness.CaseRunner(settings, measure=measure)
    runner.run(workload, workload.batches_for("seed", "quick")[0] if workload.batched else None, measure_warm=False)


if __name__ == "__main__":
    main()
