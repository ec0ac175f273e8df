"""Why test_fused_training_batch_norm_splits_its_statistics[float32] failed on the H200 at 65efbd7
(input gradient RMSE 1.97e-4 against fp64, eager's 1.24e-7): is it ait's split statistics, or
cuDNN picking a TF32 kernel for the channels-last convolution (torch.backends.cudnn.allow_tf32 is
True by default)? Prints each gradient's RMSE against fp64 for eager NCHW, eager channels-last, and
ait with the test's options, with cuDNN TF32 on and off.

    python benchmarks/results/nvidia-h200/diagnose_1203/bn_channels_last_tf32.py
"""
from __future__ import annotations

import copy
import sys

import torch

sys.path.insert(0, "tests")
from test_batch_norm import FUSED_TRAINING, ConvBnReluAdd  # noqa: E402


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def grads(model: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    out = model(x)
    params = [p for p in model.parameters()]
    return [t.double() for t in torch.autograd.grad(out, [x, *params], g)]


def rmse(a: list[torch.Tensor], r: list[torch.Tensor]) -> str:
    return " ".join(f"{float((u - v).pow(2).mean().sqrt()):.2e}" for u, v in zip(a, r))


def main() -> None:
    torch.manual_seed(0)
    base = ConvBnReluAdd(8).to(DEVICE).train()
    x = torch.randn(4, 8, 24, 24, device=DEVICE)
    g = torch.randn(4, 8, 24, 24, device=DEVICE)
    reference = grads(copy.deepcopy(base).double(), x.double(), g.double())
    print("RMSE against fp64 of grad x, conv.weight, bn.weight, bn.bias")
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        rows = {
            "eager NCHW": grads(copy.deepcopy(base), x, g),
            "eager channels-last": grads(copy.deepcopy(base).to(memory_format=torch.channels_last),
                                         x.to(memory_format=torch.channels_last), g),
        }
        for name, options in (("ait channels_last=on", {"channels_last": "on"}),
                              ("ait fused_batch_norm_training", FUSED_TRAINING)):
            torch._dynamo.reset()
            rows[name] = grads(torch.compile(copy.deepcopy(base), backend="ait", options=options), x, g)
        for name, value in rows.items():
            print(f"cudnn.allow_tf32={tf32!s:5} {name:32} {rmse(value, reference)}")


if __name__ == "__main__":
    main()
