"""Where ait's CPU time goes against eager on the main job's simple_mlp (issue 12, CPU target).

The same ATen calls run five ways, timed interleaved (alternating order, blocks of 3 calls, one
ratio to eager per round): eager; ait's generated ``call`` invoked directly; that ``call`` under
``aot_function`` alone; under ``torch.compile`` of the module with a backend that returns it
(Dynamo + AOTAutograd + the same call); Dynamo's own ``eager`` backend; and ``backend="ait"``.
Then minor page faults per call at batch 1024, where eager's fresh out-of-place buffers fault.

    python benchmarks/results/cpu-epyc/dynamo_frame/probe.py [--threads 1] [--rounds 300]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from functorch.compile import aot_function
from torch._dynamo.backends.common import aot_autograd

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.models import SimpleMLP  # noqa: E402
from ait_dynamo import ait_compile  # noqa: E402


def _functional(w1, b1, x, w2, b2, lw, lb):
    h = torch.nn.functional.gelu(torch.nn.functional.linear(x, w1, b1))
    h = torch.nn.functional.linear(h, w2, b2) + x
    return torch.nn.functional.layer_norm(h, (x.shape[-1],), lw, lb, 1e-5)


def variants(model: torch.nn.Module) -> dict:
    params = [model.dense1.weight, model.dense1.bias, None, model.dense2.weight, model.dense2.bias,
              model.layernorm.weight, model.layernorm.bias]
    calls: list = []

    def keep_call(gm, example_inputs):  # ait's compiled graph, kept to be called directly
        compiled = ait_compile(gm, example_inputs)
        calls.append(compiled)
        return compiled

    aot = aot_function(_functional, fw_compiler=keep_call)
    x0 = torch.randn(2, model.dense1.in_features)
    with torch.no_grad():
        aot(*[p if p is not None else x0 for p in params])
    call = calls[0]

    def direct(x):
        return call([p if p is not None else x for p in params])[0]

    def aot_only(x):
        return aot(*[p if p is not None else x for p in params])

    def same_call(gm, example_inputs):  # Dynamo's graph has _functional's inputs, in its order
        return call

    def through_dynamo(gm, example_inputs):  # Dynamo + AOTAutograd around the same call
        return aot_autograd(fw_compiler=same_call)(gm, example_inputs)

    return {"eager": model, "ait call, direct": direct, "aot_function + ait call": aot_only,
            "Dynamo + AOT + ait call": torch.compile(model, backend=through_dynamo),
            "Dynamo eager backend": torch.compile(model, backend="eager"),
            "backend=ait": torch.compile(model, backend="ait")}


def interleaved(fns: dict, x: torch.Tensor, rounds: int) -> dict:
    for fn in fns.values():
        for _ in range(20):
            fn(x)
    times: dict = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            start = time.perf_counter()
            for _ in range(3):
                fns[k](x)
            times[k].append((time.perf_counter() - start) / 3 * 1e3)
    return times


def faults_per_call(fn, x: torch.Tensor, calls: int = 50) -> float:
    for _ in range(5):
        fn(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SimpleMLP(256).eval()
    print(f"torch {torch.__version__}, {args.threads} thread(s), simple_mlp hidden 256")
    with torch.no_grad():
        fns = variants(model)
        x = torch.randn(256, 256)
        for name, fn in fns.items():
            torch.testing.assert_close(fn(x), model(x), rtol=1e-5, atol=1e-5)
        times = interleaved(fns, x, args.rounds)
        print(f"\nbatch 256, {args.rounds} rounds: median ms, and eager / this per round (median, quartiles)")
        for name, samples in times.items():
            ratios = sorted(e / s for e, s in zip(times["eager"], samples))
            q = len(ratios) // 4
            print(f"  {name:26s} {statistics.median(samples):7.3f} ms   {statistics.median(ratios):.3f} "
                  f"({ratios[q]:.3f}-{ratios[3 * q]:.3f})")
        big = torch.randn(1024, 256)
        print("\nbatch 1024: minor page faults per call, ms per call")
        for name in ("eager", "Dynamo eager backend", "backend=ait"):
            fn = fns[name]
            faults = faults_per_call(fn, big)
            start = time.perf_counter()
            for _ in range(30):
                fn(big)
            print(f"  {name:26s} {faults:7.1f} faults   {(time.perf_counter() - start) / 30 * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
