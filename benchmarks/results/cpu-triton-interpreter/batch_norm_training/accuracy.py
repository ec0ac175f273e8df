"""Is a decomposed training batch norm as accurate as eager's? (passes/decompositions.py)

A bf16 conv-BN-add-ReLU training step (8 x 6 x 12 x 12) compiled by ait with option
``fused_batch_norm_training`` (torch's decompositions of ``_native_batch_norm_legit_functional``
and ``native_batch_norm_backward``) against eager, both judged by RMSE against the same step in
float64; over several seeds, since one seed's ratio ranges from 0.4x to 5.6x. ``--layout on``
runs it channels-last, where the statistics are split column sums (Planner._keeps_apart). From
the repository root:

    TRITON_INTERPRET=1 python benchmarks/results/cpu-triton-interpreter/batch_norm_training/accuracy.py [seeds] [--layout=on|off]
"""

import statistics
import sys

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def step(model, x, g):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    out.backward(g)
    module = getattr(model, "_orig_mod", model)
    return [out, x.grad] + [p.grad for p in module.parameters()]


def rmse(value, reference):
    return ((value.double() - reference) ** 2).mean().sqrt().item()


def main(seeds: int, layout: str) -> None:
    names = ["output", "input grad", "conv weight grad", "bn weight grad", "bn bias grad"]
    ratios = {name: [] for name in names}
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = Block(6).to(torch.bfloat16)
        x = torch.randn(8, 6, 12, 12, dtype=torch.bfloat16)
        g = torch.randn(8, 6, 12, 12, dtype=torch.bfloat16)
        reference_model = Block(6).double()
        reference_model.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
        compiled_model = Block(6).to(torch.bfloat16)
        compiled_model.load_state_dict(model.state_dict())
        torch._dynamo.reset()
        compiled = torch.compile(compiled_model, backend="ait",
                                 options={"fused_batch_norm_training": True, "channels_last": layout})
        reference = step(reference_model, x.double(), g.double())
        eager = step(model, x, g)
        ait = step(compiled, x, g)
        for name, e, a, r in zip(names, eager, ait, reference):
            ratios[name].append(rmse(a, r) / max(rmse(e, r), 1e-30))
    print(f"RMSE against float64, ait / eager, {seeds} seeds, channels_last={layout} (torch {torch.__version__}):")
    for name, values in ratios.items():
        print(f"  {name}: median {statistics.median(values):.2f}, range {min(values):.2f}-{max(values):.2f}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--layout")]
    layout = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--layout=")), "off")
    main(int(arguments[0]) if arguments else 10, layout)
