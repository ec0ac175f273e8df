"""Host time of cuDNN's convolution forward and backward with channels-last activations, the weight
OIHW or channels-last (passes/layout.py writes autocast's weight casts channels-last). ResNet-50's
3x3 and 1x1 layer shapes, bf16, batch 32; every call's host time with perf_counter, the GPU kept
busy behind by a long kernel so that no call waits on it; medians over 200 rounds, the two
layouts interleaved."""

from __future__ import annotations

import statistics
import time

import torch

SHAPES = [  # (channels in, channels out, kernel, stride, spatial)
    (64, 64, 3, 1, 56), (128, 128, 3, 2, 56), (256, 256, 3, 1, 14), (512, 512, 3, 1, 7),
    (256, 64, 1, 1, 56), (1024, 256, 1, 1, 14), (2048, 512, 1, 1, 7), (3, 64, 7, 2, 224),
]


def main() -> None:
    torch.backends.cudnn.benchmark = False
    device = torch.device("cuda")
    cases = []
    for cin, cout, k, s, hw in SHAPES:
        x = torch.randn(32, cin, hw, hw, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, k, k, device=device, dtype=torch.bfloat16)
        y = torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2)
        g = torch.randn_like(y).contiguous(memory_format=torch.channels_last)
        cases.append((f"{cin}->{cout} k{k} s{s} {hw}", x, w, w.contiguous(memory_format=torch.channels_last), g, s, k // 2))
    spin = torch.empty(1 << 26, device=device)
    times: dict[tuple, list[float]] = {}
    for round_ in range(220):
        spin.mul_(1.0)  # ~0.1 ms of GPU work queued ahead
        for name, x, w_oihw, w_cl, g, s, p in cases:
            for layout, w in (("OIHW", w_oihw), ("channels-last", w_cl)) if round_ % 2 else (("channels-last", w_cl), ("OIHW", w_oihw)):
                began = time.perf_counter()
                torch.ops.aten.convolution.default(x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1)
                middle = time.perf_counter()
                torch.ops.aten.convolution_backward.default(g, x, w, [0], [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                            [True, True, False])
                end = time.perf_counter()
                if round_ >= 20:
                    times.setdefault((name, layout, "forward"), []).append((middle - began) * 1e6)
                    times.setdefault((name, layout, "backward"), []).append((end - middle) * 1e6)
        torch.cuda.synchronize()
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    print(f"{'layer':28s} {'fwd OIHW':>9s} {'fwd CL':>9s} {'bwd OIHW':>9s} {'bwd CL':>9s}   (host us, median)")
    for name, *_ in cases:
        row = [statistics.median(times[(name, layout, kind)]) for kind in ("forward", "backward")
               for layout in ("OIHW", "channels-last")]
        print(f"{name:28s} " + " ".join(f"{v:9.1f}" for v in row))


if __name__ == "__main__":
    main()
