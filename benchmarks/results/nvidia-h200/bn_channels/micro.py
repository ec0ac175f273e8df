"""Training batch norm's reductions on ResNet-50's shapes (bf16, channels-last, batch 32): ATen's
kernels against kernels/batch_norm_channels.py, summed over the network's 53 layers, beside the
floor (bytes read at the copy rate measured here). GPU time from
triton.testing.do_bench_cudagraph (median; the calls captured in a CUDA graph, so no host time),
host time per call from 200 back-to-back calls (perf_counter, the queue drained at the end: it is
the larger of host and GPU time, which for all but the largest layers is the host's).

    python benchmarks/results/nvidia-h200/bn_channels/micro.py
"""

from __future__ import annotations

import collections
import os

import torch
import torchvision
import time

from triton.testing import do_bench, do_bench_cudagraph

from ait_dynamo.kernels import batch_norm_channels as bc
from ait_dynamo.kernels import runtime


def resnet50_batch_norm_inputs(batch: int) -> collections.Counter:
    model = torchvision.models.resnet50()
    shapes: collections.Counter = collections.Counter()
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.update([tuple(i[0].shape)]))
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    return collections.Counter({(batch,) + s[1:]: n for s, n in shapes.items()})


def main() -> None:
    torch.manual_seed(0)
    shapes = resnet50_batch_norm_inputs(32)
    big = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    copy_ms = do_bench(lambda: big.clone())
    rate = 2 * big.numel() / copy_ms / 1e9  # TB/s, read + write
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}; copy rate {rate:.2f} TB/s")
    sms = runtime.multiprocessors([big])
    totals = collections.Counter()
    print(f"{'shape':>22} {'n':>2} | stats us: aten ours floor | grad sums us: aten ours floor")
    for shape, count in sorted(shapes.items(), key=lambda kv: -kv[0][1] * kv[0][2] * kv[0][3]):
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        dy = torch.randn_like(x)
        channels = shape[1]
        rows = x.numel() // channels
        grid = bc.channel_grid(rows, channels, sms).fields()
        rm, rv, w = torch.zeros(channels, device="cuda"), torch.ones(channels, device="cuda"), torch.randn(channels, device="cuda")
        counts = torch.full((1,), float(rows), device="cuda")

        def aten_stats():
            mean, invstd = torch.batch_norm_stats(x, 1e-5)
            torch.batch_norm_gather_stats_with_counts(x, mean.view(1, -1), invstd.view(1, -1), rm, rv, 0.1, 1e-5, counts)

        mean, invstd = torch.batch_norm_stats(x, 1e-5)
        ours_mean, ours_invstd = bc.channel_statistics(x, rm, rv, 0.1, 1e-5, grid)
        torch.testing.assert_close(ours_mean, mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours_invstd, invstd, rtol=1e-4, atol=1e-4)
        calls = {
            "stats_aten": aten_stats,
            "stats_ours": lambda: bc.channel_statistics(x, rm, rv, 0.1, 1e-5, grid),
            "sums_aten": lambda: torch.batch_norm_backward_reduce(dy, x, mean, invstd, w, True, True, True),
            "sums_ours": lambda: bc.channel_gradient_sums(dy, x, mean, invstd, w, grid),
        }
        timings = {key: do_bench_cudagraph(fn) for key, fn in calls.items()}
        for key, fn in calls.items():
            torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(200):
                fn()
            torch.cuda.synchronize()
            totals["host_" + key] += count * (time.perf_counter() - started) / 200 * 1e3
        floor_stats = x.numel() * 2 / rate / 1e9  # ms
        for key, value in timings.items():
            totals[key] += count * value
        totals["floor_stats"] += count * floor_stats
        totals["floor_sums"] += count * 2 * floor_stats
        print(f"{str(shape):>22} {count:>2} | {timings['stats_aten'] * 1e3:7.1f} {timings['stats_ours'] * 1e3:7.1f} "
              f"{floor_stats * 1e3:6.1f} | {timings['sums_aten'] * 1e3:7.1f} {timings['sums_ours'] * 1e3:7.1f} "
              f"{2 * floor_stats * 1e3:6.1f}  grid {grid}")
    print("per step (ms, 53 layers): statistics ATen {stats_aten:.3f} ours {stats_ours:.3f} floor {floor_stats:.3f}; "
          "gradient sums ATen {sums_aten:.3f} ours {sums_ours:.3f} floor {floor_sums:.3f}".format(**totals))
    if os.environ.get("MICRO_SWEEP", "1") != "0":
        sweep(shapes, sms, rate)
    print("host+queue per step (ms): statistics ATen {host_stats_aten:.3f} ours {host_stats_ours:.3f}; "
          "gradient sums ATen {host_sums_aten:.3f} ours {host_sums_ours:.3f}".format(**totals))


# (values per tile, warps, programs per multiprocessor): the grid choices compared
VARIANTS = [(4096, 4, 4), (8192, 8, 4), (8192, 4, 4), (4096, 4, 8), (16384, 8, 2), (8192, 8, 8)]


def sweep(shapes: collections.Counter, sms: int, rate: float) -> None:
    """GPU time per step of both reductions for each grid variant (CUDA graphs: kernels only)."""
    for tile, warps, per_sm in VARIANTS:
        total = collections.Counter()
        for shape, count in shapes.items():
            x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
            dy = torch.randn_like(x)
            channels = shape[1]
            grid = bc.channel_grid(x.numel() // channels, channels, sms, tile, warps, per_sm).fields()
            w = torch.randn(channels, device="cuda")
            mean, invstd = bc.channel_statistics(x, None, None, 0.1, 1e-5, grid)
            total["stats"] += count * do_bench_cudagraph(lambda: bc.channel_statistics(x, None, None, 0.1, 1e-5, grid))
            total["sums"] += count * do_bench_cudagraph(lambda: bc.channel_gradient_sums(dy, x, mean, invstd, w, grid))
        print(f"variant tile {tile} warps {warps} programs/SM {per_sm}: statistics {total['stats']:.3f} ms, "
              f"gradient sums {total['sums']:.3f} ms per step")


if __name__ == "__main__":
    main()
