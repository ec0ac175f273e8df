"""Where the CPU main job's simple_mlp row loses to eager (issue 12): the same module eagerly, as a
plain function of the same ATen calls (ait's generated body for it), and compiled by ait, by
Dynamo with the eager backend, by aot_eager, and the plain function compiled by Dynamo. Each
timed in interleaved rounds in one process; prints the median time and the median ratio of
eager's time to its own over the rounds (``region_scaling.py`` reuses its model and body). From
the repository root:

    python benchmarks/results/cpu-xeon/compile_overhead/compiled_region.py
"""

import copy
import statistics
import sys
import timeit

import torch

sys.path.insert(0, ".")
from benchmarks.workloads import WORKLOADS  # noqa: E402

torch.manual_seed(0)
built = WORKLOADS["simple_mlp"].build("small", 256, torch.device("cpu"))
model, (x,) = built.module, built.inputs
w1, b1, w2, b2, g, bb = [p.detach() for p in (model.dense1.weight, model.dense1.bias, model.dense2.weight,
                                                model.dense2.bias, model.layernorm.weight, model.layernorm.bias)]


def generated_body(x: torch.Tensor) -> torch.Tensor:
    """The ATen calls of ait's wrapper for this model on the CPU (gelu and the residual add in place)."""
    h = torch.addmm(b1, x, w1.t())
    h = torch.ops.aten.gelu_(h)
    h2 = torch.addmm(b2, h, w2.t())
    del h
    h2 = h2.add_(x)
    return torch.native_layer_norm(h2, [256], g, bb, 1e-5)[0]


def main() -> None:
    variants = {
        "eager": model,
        "plain_function": generated_body,
        "ait": torch.compile(model, backend="ait"),
        "dynamo_eager": torch.compile(copy.deepcopy(model), backend="eager"),
        "aot_eager": torch.compile(copy.deepcopy(model), backend="aot_eager"),
        "plain_function_dynamo": torch.compile(generated_body, backend="eager"),
    }
    with torch.no_grad():
        for f in variants.values():
            for _ in range(10):
                f(x)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(15):
            for name, f in variants.items():
                times[name].append(timeit.timeit(lambda: f(x), number=20) / 20 * 1e6)
        for name, values in times.items():
            ratios = [e / t for e, t in zip(times["eager"], values)]
            print(f"{name:22s} median {statistics.median(values):8.1f} us  eager/this {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
