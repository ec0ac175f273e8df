"""Host time of one ``torch.convolution`` call on CUDA, fp16, channels-last input, by the weight's
layout (NCHW as a parameter comes, or channels-last as Inductor passes it): ResNet-50's 3x3 and 1x1
shapes at batch 32. Host time = wall time of N enqueues with the GPU kept busy behind them (a long
sleep kernel first), so the CPU side is measured alone."""
import time

import torch

SHAPES = [  # (input N, C, H, W), weight (K, C, R, S), stride, padding
    ((32, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ((32, 256, 56, 56), (64, 256, 1, 1), 1, 0),
    ((32, 512, 14, 14), (512, 512, 3, 3), 2, 1),
    ((32, 3, 224, 224), (64, 3, 7, 7), 2, 3),
]
CALLS = 200


def host_us(x, w, stride, padding) -> float:
    for _ in range(20):
        torch.convolution(x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        torch.cuda._sleep(200_000_000)  # keeps the GPU busy so the enqueues never wait on it
        start = time.perf_counter()
        for _ in range(CALLS):
            torch.convolution(x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1)
        best = min(best, (time.perf_counter() - start) / CALLS * 1e6)
        torch.cuda.synchronize()
    return best


def main() -> None:
    torch.backends.cudnn.benchmark = False
    print("torch", torch.__version__, torch.cuda.get_device_name(), "cudnn", torch.backends.cudnn.version())
    print("input (channels-last)      weight              NCHW weight us   channels-last weight us   pointwise add us")
    with torch.no_grad():
        for xs, ws, stride, padding in SHAPES:
            x = torch.randn(xs, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
            w = torch.randn(ws, device="cuda", dtype=torch.half)
            nchw = host_us(x, w, stride, padding)
            cl = host_us(x, w.to(memory_format=torch.channels_last), stride, padding)
            torch.cuda.synchronize()
            torch.cuda._sleep(100_000_000)
            start = time.perf_counter()
            for _ in range(CALLS):
                torch.add(x, x)
            add = (time.perf_counter() - start) / CALLS * 1e6
            torch.cuda.synchronize()
            print(f"{str(xs):26s} {str(ws):20s} {nchw:14.1f} {cl:25.1f} {add:18.1f}")


if __name__ == "__main__":
    main()
