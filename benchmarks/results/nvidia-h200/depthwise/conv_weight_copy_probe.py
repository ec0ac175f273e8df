"""Does cuDNN's convolution copy an NCHW weight to channels-last on every call when its input is
channels-last? ResNet-50's ait step ran 17 ATen copy kernels (68 us) that Inductor's did not;
ResNet-50 has 17 convolutions with kernels larger than 1x1, whose weights are not already
channels-last (a 1x1 weight is both layouts at once). Prints the copy kernels per call for each
weight layout, fp16, batch 32.

    python3 benchmarks/results/nvidia-h200/depthwise/conv_weight_copy_probe.py
"""
import torch
from torch.profiler import ProfilerActivity, profile

x = torch.randn(32, 64, 56, 56, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
for kernel in (1, 3):
    for layout in ("nchw weight", "channels-last weight"):
        w = torch.randn(64, 64, kernel, kernel, device="cuda", dtype=torch.half)
        if layout != "nchw weight":
            w = w.to(memory_format=torch.channels_last)
        for _ in range(3):
            torch.nn.functional.conv2d(x, w, padding=kernel // 2)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                torch.nn.functional.conv2d(x, w, padding=kernel // 2)
            torch.cuda.synchronize()
        copies = [e for e in prof.key_averages() if "copy" in e.key.lower()]
        per_call = sum(e.count for e in copies) / 10
        us = sum(e.device_time_total for e in copies) / 10
        print(f"{kernel}x{kernel} {layout}: {per_call:.1f} copy kernels per call, {us:.1f} us")
