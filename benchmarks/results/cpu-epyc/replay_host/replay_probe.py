"""Host cost of one replayed inference call, on the CPU: ait's CUDA-graph path (``mode=
"reduce-overhead"``) with a recorder whose replay does nothing, against Dynamo + AOTAutograd
calling a compiled graph that returns cached outputs (what any backend pays before its own work).
A torchvision model in eval mode under ``torch.no_grad()``; with ``--parts``, the replay's checks
timed alone. Usage: python replay_probe.py [model] [--parts] (torchvision needed)."""
from __future__ import annotations

import statistics
import sys
import time
import timeit

import torch
import torchvision
from torch._dynamo.backends.common import aot_autograd

from ait_dynamo import cuda_graphs


class NoReplay:
    """Captures by running the code once; its replay does nothing (no GPU here)."""

    pool_keeps_memory = False

    def __init__(self, pair):
        pass

    def record(self, run):
        return run(), (lambda: None)


def cached_outputs(gm, example_inputs):
    outputs = None

    def run(args):
        nonlocal outputs
        if outputs is None:
            outputs = gm(*args)
        args.clear()
        return outputs

    run._boxed_call = True
    return run


def per_call_us(fn, x, calls=300) -> float:
    begin = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - begin) / calls * 1e6


def main() -> None:
    cuda_graphs.RECORDER_FACTORY[:] = [NoReplay]
    name = next((a for a in sys.argv[1:] if not a.startswith("--")), "resnet50")
    model = getattr(torchvision.models, name)().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        base = torch.compile(model, backend=aot_autograd(fw_compiler=cached_outputs, inference_compiler=cached_outputs))
        ait = torch.compile(model, backend="ait", mode="reduce-overhead")
        for fn in (base, ait):
            for _ in range(5):
                fn(x)
        graphed = cuda_graphs.instances()
        assert len(graphed) == 1 and graphed[0].replays > 0 and graphed[0].disabled is None, graphed
        rounds: dict[str, list[float]] = {"Dynamo + AOTAutograd, cached outputs": [], "ait reduce-overhead, no-op replay": []}
        for index in range(15):  # interleaved rounds: both see the same machine
            pairs = list(zip(rounds, (base, ait)))
            for label, fn in pairs if index % 2 == 0 else reversed(pairs):
                rounds[label].append(per_call_us(fn, x))
        print(f"{name}, torch {torch.__version__}: median us per call over 15 interleaved rounds of 300 calls")
        for label, values in rounds.items():
            print(f"  {label}: {statistics.median(values):.1f}")
        if "--parts" in sys.argv:
            graph = graphed[0]
            seen: list[list] = []
            original = type(graph).__call__
            type(graph).__call__ = lambda self, args: (seen.append(list(args)), original(self, args))[1]
            ait(x)
            type(graph).__call__ = original
            inputs, capture = seen[0], graph.capture
            n = 3000

            def best(stmt) -> float:
                return min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e6

            print(f"  inputs {len(inputs)}, static {len(capture.static_indices)}:")
            print(f"    _replay_refusal (every check) {best(lambda: graph._replay_refusal(inputs)):.1f} us, of which the "
                  f"static inputs' pointers {best(lambda: cuda_graphs._moved_static_input(inputs, capture.static_indices, capture.pointers)):.1f} us")
            print(f"    _hand_out (the output's copy) {best(lambda: graph._hand_out({})):.1f} us")


if __name__ == "__main__":
    main()
