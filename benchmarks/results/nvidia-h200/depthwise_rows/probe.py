"""The depthwise template's two tilings against cuDNN, layer by layer (issue 13, item 4).

For each layer (the model suite's depthwise layers at batch 32, fp16, channels-last): GPU time per
call, replayed in a CUDA graph (``triton.testing.do_bench_cudagraph``: no host time), of

- eager: cuDNN's convolution, then ATen's epilogue ops;
- Inductor (default mode): cuDNN plus its fused epilogue kernel;
- ait's template with each configuration ``autotune`` would measure (pixel tiles, ROWS = 0, and
  row tiles, ROWS > 0; ``kernels/depthwise.py``), its epilogue fused, each checked against eager;

beside the layer's floor: input and output bytes at the copy rate measured on this card,
4.02 TB/s (``../depthwise/README.md``). Writes ``probe.json`` and ``probe.md`` under ``--out``.

    python benchmarks/results/nvidia-h200/depthwise_rows/probe.py --out DIR [--budget 420] [--only convnext]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

COPY_TB_S = 4.02
# (name, channels, input size, kernel, stride, epilogue)
LAYERS = (
    ("convnext_s1_7x7_96", 96, 56, 7, 1, "bias"),
    ("convnext_s2_7x7_192", 192, 28, 7, 1, "bias"),
    ("convnext_s3_7x7_384", 384, 14, 7, 1, "bias"),
    ("convnext_s4_7x7_768", 768, 7, 7, 1, "bias"),
    ("efficientnet_5x5_672_silu", 672, 14, 5, 1, "silu"),
    ("mobilenet_5x5_960_hswish", 960, 7, 5, 1, "hardswish"),
    ("mobilenet_3x3_240_hswish", 240, 28, 3, 1, "hardswish"),
    ("efficientnet_3x3_32_silu", 32, 112, 3, 1, "silu"),
)


def block(channels: int, kernel: int, stride: int, epilogue: str) -> nn.Module:
    conv = nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, bias=epilogue == "bias")
    if epilogue == "bias":
        return conv
    norm = nn.BatchNorm2d(channels)
    with torch.no_grad():
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return nn.Sequential(conv, norm, nn.SiLU() if epilogue == "silu" else nn.Hardswish())


def gpu_ms(fn) -> float:
    from triton.testing import do_bench_cudagraph

    fn()
    torch.cuda.synchronize()
    return float(do_bench_cudagraph(fn, rep=50))


def main() -> None:
    from ait_dynamo.kernels import depthwise

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds; later layers are skipped after it")
    parser.add_argument("--only", default="", help="the layers whose name starts with this (e.g. convnext)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows = []
    real_heuristic = depthwise.heuristic
    for name, channels, size, kernel, stride, epilogue in LAYERS:
        if not name.startswith(args.only):
            continue
        if time.monotonic() - started > args.budget:
            print(f"{name}: skipped (budget)", flush=True)
            continue
        torch.manual_seed(0)
        model = block(channels, kernel, stride, epilogue).cuda().half().eval().to(memory_format=torch.channels_last)
        x = torch.randn(32, channels, size, size, device="cuda", dtype=torch.half).contiguous(
            memory_format=torch.channels_last)
        with torch.no_grad():
            expected = model(x)
            out_size = expected.shape[-1]
            shape = (32, channels, expected.shape[-2], out_size, kernel, stride)
            floor_us = (x.numel() + expected.numel()) * 2 / (COPY_TB_S * 1e6)
            row = {"layer": name, "floor_us": floor_us, "eager_us": gpu_ms(lambda: model(x)) * 1e3,
                   "heuristic": list(real_heuristic(shape)), "configs": {}}
            torch._dynamo.reset()
            inductor = torch.compile(model)
            row["inductor_us"] = gpu_ms(lambda: inductor(x)) * 1e3
            for config in depthwise.candidates(shape):
                depthwise.heuristic = lambda _shape, chosen=config: chosen
                torch._dynamo.reset()
                with tempfile.TemporaryDirectory() as cache:
                    compiled = torch.compile(model, backend="ait",
                                             options={"gemm_backends": ("triton",), "cache_dir": cache})
                    try:
                        error = (compiled(x).float() - expected.float()).abs().max().item()
                        row["configs"][str(tuple(config))] = {"us": gpu_ms(lambda: compiled(x)) * 1e3, "max_error": error}
                    except Exception as failure:  # noqa: BLE001 - a probe: record and go on
                        row["configs"][str(tuple(config))] = {"error": repr(failure)[:300]}
                depthwise.heuristic = real_heuristic
        timed = {c: v["us"] for c, v in row["configs"].items() if "us" in v}
        best_pixel = min((t for c, t in timed.items() if c.endswith(" 0)")), default=None)
        best_rows = min((t for c, t in timed.items() if not c.endswith(" 0)")), default=None)
        row.update(best_pixel_us=best_pixel, best_rows_us=best_rows)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "configs"}), flush=True)
        (out / "probe.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                                    "triton": __import__("triton").__version__, "layers": rows},
                                                   indent=1))
    lines = ["| layer | floor us | eager us | Inductor us | template, pixel tiles us | template, row tiles us | heuristic |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        cells = [f"{row[k]:.1f}" if isinstance(row.get(k), float) else "-"
                 for k in ("floor_us", "eager_us", "inductor_us", "best_pixel_us", "best_rows_us")]
        lines.append(f"| {row['layer']} | " + " | ".join(cells) + f" | {tuple(row['heuristic'])} |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
