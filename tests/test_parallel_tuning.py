"""With ``autotune`` on CUDA, the pointwise, reduction and depthwise-convolution launchers compile
their candidate configurations in parallel threads (``runtime.warm_configs``) before timing them
one by one, as the GEMM template does (tests/test_gemm_template.py): compiled in turn they cost
4-13 s per depthwise convolution and about 55 s of EfficientNet-B0's first call on the H200. Off
CUDA, the tuning path is entered by stubbing ``runtime._tuning`` and ``runtime.launch``."""

from __future__ import annotations

import threading

import pytest
import torch

from ait_dynamo.kernels import autotune, depthwise, runtime


class RecordingKernel:
    def __init__(self, events: list, threads: set):
        self.events, self.threads = events, threads

    def warmup(self, *args, grid, num_warps, **constexprs):
        self.threads.add(threading.current_thread().name)
        self.events.append(("compiled", (*constexprs.values(), num_warps), args))


def _launcher(kind: str):
    """(launch the kind's tuned launcher once, its candidate configurations, the trailing ints
    the kernel gets after the tensors)."""
    if kind == "pointwise":
        xnumel = 1 << 20
        candidates = [runtime.pointwise_config(xnumel)] + [
            c for c in ((512, 4), (1024, 4), (2048, 8), (4096, 8)) if c != runtime.pointwise_config(xnumel)]
        return (lambda k: runtime.launch_pointwise(k, [torch.zeros(1)], [7], xnumel, tune="key"),
                candidates, (7, xnumel))
    if kind == "reduction":
        xnumel, rnumel = 64, 100_000
        return (lambda k: runtime.launch_reduction(k, [torch.zeros(1)], [7], xnumel, rnumel, False, tune="key"),
                None, (7, xnumel, rnumel))
    shape = (32, 240, 28, 28, 3, 1)  # MobileNetV3's 240-channel 3x3 layer at batch 32
    return (lambda k: depthwise.launch(k, [torch.zeros(1)], [7, 9], shape, tune="key"),
            # as the kernel sees them: its constexprs, then the warps
            [(*depthwise.constexprs(c).values(), c[2]) for c in depthwise.candidates(shape)], (7, 9))


@pytest.mark.parametrize("kind", ["pointwise", "reduction", "conv"])
def test_candidates_compile_in_parallel_before_any_is_timed(kind, tmp_path, monkeypatch):
    events: list = []
    threads: set = set()

    def launch(kernel, grid, args, constexprs, warps, stages=None):
        events.append(("ran", (*constexprs.values(), warps), tuple(args)))

    monkeypatch.setattr(runtime, "INTERPRETING", False)
    monkeypatch.setattr(runtime, "_tuning", lambda tune, tensors: True)
    monkeypatch.setattr(runtime, "launch", launch)
    monkeypatch.setattr(autotune, "_memory", {})
    autotune.set_directory(str(tmp_path))
    timings = iter(range(100, 0, -1))  # each later candidate times faster: the last one wins
    real_choose = autotune.choose

    def choose(*args, **kwargs):
        return real_choose(*args, device="dev", bench=lambda fn: (fn(), next(timings))[1], **kwargs)

    monkeypatch.setattr(autotune, "choose", choose)
    run_once, candidates, ints = _launcher(kind)
    run_once(RecordingKernel(events, threads))

    compiled = [(config, args) for what, config, args in events if what == "compiled"]
    timed = [config for what, config, _ in events if what == "ran"]
    if candidates is not None:
        assert sorted(c for c, _ in compiled) == sorted(candidates)
    assert len(compiled) >= 3 and sorted(c for c, _ in compiled) == sorted(timed[:-1])
    # the launch's own arguments: the same specialisation as the timed launches
    assert all(args[-len(ints):] == ints for _, args in compiled)
    first_run = next(i for i, event in enumerate(events) if event[0] == "ran")
    assert all(event[0] == "compiled" for event in events[:first_run])
    assert threads and all(name.startswith("ait-template-compile") for name in threads)
    assert timed[-1] == timed[-2]  # the fastest (the last timed), launched for real
