"""Why ait's step took more host time with ``autotune=1`` than without (the model suite,
27506ff and 9c17fe4: ConvNeXt-T 3570 against 2459 us, EfficientNet-B0 4120 against 3577 us, with
the same kernel time). One process, EfficientNet-B0 fp16 batch 32: ait and ait with
``autotune=1`` (tuning budget 5 s), host enqueue time per step interleaved over rounds, and the
state of each compile's launch sites (direct, bound, new, retired) by kind.

    python3 benchmarks/results/nvidia-h200/depthwise/autotune_host_probe.py
"""

from __future__ import annotations

import collections
import copy
import gc
import statistics
import time

import torch
import torchvision

from ait_dynamo.kernels.launch_site import LaunchSite


def _launch_sites() -> list[LaunchSite]:
    # type(), not isinstance(): gc also lists weak proxies, whose isinstance raises once dead
    return [o for o in gc.get_objects() if type(o) is LaunchSite]


def sites() -> set[int]:
    return {id(o) for o in _launch_sites()}


def states(ids: set[int]) -> dict[str, int]:
    found = [o for o in _launch_sites() if id(o) in ids]
    return dict(collections.Counter(repr(o).split(", ", 1)[1].rstrip(")") for o in found))


def enqueue_us(fn, steps: int = 30) -> float:
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(times) * 1e6


def main() -> None:
    model = torchvision.models.efficientnet_b0().cuda().half().eval()
    x = torch.randn(32, 3, 224, 224, device="cuda", dtype=torch.half)
    compiled, owned = {}, {}
    for label, options in (("ait", {}), ("ait+autotune", {"autotune": True, "autotune_budget_s": 5})):
        before = sites()
        fn = torch.compile(copy.deepcopy(model), backend="ait", options=options, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            fn(x)
            fn(x)
        torch.cuda.synchronize()
        print(f"{label}: compiled in {time.perf_counter() - start:.1f} s", flush=True)
        compiled[label], owned[label] = fn, sites() - before
    with torch.no_grad():
        for label, fn in compiled.items():
            print(label, "sites", states(owned[label]), flush=True)
        rounds = {label: [] for label in compiled}
        for _ in range(5):
            for label, fn in compiled.items():
                rounds[label].append(enqueue_us(lambda: fn(x)))
        eager = enqueue_us(lambda: model(x))
    for label, values in rounds.items():
        print(f"{label}: host enqueue us per step, rounds {[round(v) for v in values]}, median {statistics.median(values):.0f}")
    print(f"eager: {eager:.0f} us")
    for label in compiled:
        print(label, "sites after", states(owned[label]))


if __name__ == "__main__":
    main()
