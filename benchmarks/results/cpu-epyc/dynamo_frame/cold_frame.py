"""How long Dynamo's frame takes around a compiled module's call, warm and after real work.

A backend that records when the compiled function is entered and left shows the time before
(guards, Dynamo's bytecode, AOTAutograd's runtime wrapper) and after it. Four backends on the same
module (the main job's ``SimpleMLP`` at hidden 256, batch 256, one thread), called in turn so that
each call follows another's work: A runs the MLP's ATen ops and returns a new tensor, B runs them
and returns the input, C only allocates the output, D does nothing.

    python benchmarks/results/cpu-epyc/dynamo_frame/cold_frame.py [--rounds 300]

Then the same with one backend called alone (warm). The numbers are in ``README.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.models import SimpleMLP  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    rounds = parser.parse_args().rounds
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SimpleMLP(256).eval()
    x = torch.randn(256, 256)
    clock = time.perf_counter
    marks: dict[str, float] = {}

    def mlp() -> torch.Tensor:
        h = torch.addmm(model.dense1.bias, x, model.dense1.weight.t())
        F.gelu(h, out=h)
        h2 = torch.addmm(model.dense2.bias, h, model.dense2.weight.t())
        h2.add_(x)
        return F.layer_norm(h2, (256,), model.layernorm.weight, model.layernorm.bias, 1e-5)

    bodies = {
        "A: the MLP's ops, a new output": mlp,
        "B: the MLP's ops, the input returned": lambda: (mlp(), x)[1],
        "C: no ops, a new output": lambda: torch.empty(256, 256),
        "D: no ops": lambda: x,
    }

    def backend_for(body):
        def backend(gm, example_inputs):
            def run(*args):
                marks["in"] = clock()
                out = body()
                marks["out"] = clock()
                return (out,)
            return run
        return backend

    compiled = {}
    for name, body in bodies.items():
        class Copy(SimpleMLP):  # a class per backend: one Dynamo cache entry each
            pass
        module = Copy(256).eval()
        module.load_state_dict(model.state_dict())
        compiled[name] = torch.compile(module, backend=backend_for(body))

    def measure(names: list[str]) -> dict[str, tuple[float, float, float]]:
        series = {name: ([], [], []) for name in names}
        for name in names:
            for _ in range(10):
                compiled[name](x)
        for _ in range(rounds):
            for name in names:
                start = clock()
                compiled[name](x)
                end = clock()
                before, after, total = series[name]
                before.append((marks["in"] - start) * 1e6)
                after.append((end - marks["out"]) * 1e6)
                total.append((end - start) * 1e6)
        return {name: tuple(statistics.median(v) for v in values) for name, values in series.items()}

    with torch.no_grad():
        print("in turn (each call after another's work), median us: before / after / whole call")
        for name, (before, after, total) in measure(list(bodies)).items():
            print(f"  {name:40s} {before:7.1f} {after:7.1f} {total:9.1f}")
        print("alone (warm), median us")
        for name in ("D: no ops", "A: the MLP's ops, a new output"):
            before, after, total = measure([name])[name]
            print(f"  {name:40s} {before:7.1f} {after:7.1f} {total:9.1f}")


if __name__ == "__main__":
    main()
