"""torchvision's ResNet-18 compiled once with ``dynamic=True`` and run on two image sizes
(inference): the largest error against eager and float64, and per compiled graph the kernels
generated and the ops left to ATen; then the static compile of the first size, for comparison.
Run from another folder than the repository root::

    TRITON_INTERPRET=1 python dynamic_resnet18.py
"""

from __future__ import annotations

import torch
import torchvision
import triton

from ait_dynamo import metrics


def main() -> None:
    print("torch", torch.__version__, "torchvision", torchvision.__version__, "triton", triton.__version__)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    reference = torchvision.models.resnet18(num_classes=10).double().eval()
    reference.load_state_dict(model.state_dict())
    compiled = torch.compile(model, backend="ait", dynamic=True)
    for size in (33, 40):
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            got, want, exact = compiled(x), model(x), reference(x.double())
        print(f"{size}x{size}: ait against eager {(got - want).abs().max().item():.2e}, against float64 "
              f"{(got.double() - exact).abs().max().item():.2e} (eager's {(want.double() - exact).abs().max().item():.2e})")
    for graph in metrics.compiled_graphs:
        print(f"{graph.name}: {len(graph.kernels)} kernels, {len(graph.refused)} ops refused, fallback {graph.fallback_reason}")
    # the static compile of the first size, for comparison
    torch._dynamo.reset()
    metrics.reset()
    with torch.no_grad():
        torch.compile(model, backend="ait", dynamic=False)(torch.randn(1, 3, 33, 33))
    for graph in metrics.compiled_graphs:
        print(f"static 33x33, {graph.name}: {len(graph.kernels)} kernels, {len(graph.refused)} ops refused")


if __name__ == "__main__":
    main()
