"""The depthwise template's column tiling against its pixel tiling and cuDNN on ConvNeXt-T's four
7x7 layers (issue 13, item 4): GPU time per call replayed in a CUDA graph, as
``../../nvidia-h200/depthwise_rows/probe.py`` measures (its layers, blocks and timer are used), for
the pixel configuration the heuristic took before the column tiling and every column one.

    python benchmarks/results/nvidia-h100/session_1206/probe_columns.py --out DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

_PROBE = Path(__file__).resolve().parents[2] / "nvidia-h200" / "depthwise_rows" / "probe.py"
_spec = importlib.util.spec_from_file_location("depthwise_rows_probe", _PROBE)
rows_probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rows_probe)

# what the heuristic took for these layers before the column tiling (e9cbe77 .. this change)
PIXEL_BEFORE = {96: (128, 32, 4, 0, 0), 192: (64, 64, 4, 0, 0), 384: (64, 64, 4, 0, 0), 768: (64, 64, 4, 0, 0)}


def main() -> None:
    from ait_dynamo.kernels import depthwise

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real_heuristic = depthwise.heuristic
    layers = []
    for name, channels, size, kernel, stride, epilogue in rows_probe.LAYERS:
        if not name.startswith("convnext"):
            continue
        torch.manual_seed(0)
        model = rows_probe.block(channels, kernel, stride, epilogue).cuda().half().eval().to(
            memory_format=torch.channels_last)
        x = torch.randn(32, channels, size, size, device="cuda", dtype=torch.half).contiguous(
            memory_format=torch.channels_last)
        shape = (32, channels, size, size, kernel, stride)
        with torch.no_grad():
            expected = model(x)
            row = {"layer": name, "floor_us": (x.numel() + expected.numel()) * 2 / (rows_probe.COPY_TB_S * 1e6),
                   "eager_us": rows_probe.gpu_ms(lambda: model(x)) * 1e3, "heuristic": list(real_heuristic(shape)),
                   "configs": {}}
            torch._dynamo.reset()
            inductor = torch.compile(model)
            row["inductor_us"] = rows_probe.gpu_ms(lambda: inductor(x)) * 1e3
            configs = [PIXEL_BEFORE[channels]] + [c for c in depthwise.candidates(shape) if c[4] > 0]
            for config in configs:
                depthwise.heuristic = lambda _shape, chosen=config: chosen
                torch._dynamo.reset()
                with tempfile.TemporaryDirectory() as cache:
                    compiled = torch.compile(model, backend="ait", options={"gemm_backends": ("triton",), "cache_dir": cache})
                    try:
                        error = (compiled(x).float() - expected.float()).abs().max().item()
                        row["configs"][str(tuple(config))] = {"us": rows_probe.gpu_ms(lambda: compiled(x)) * 1e3,
                                                              "max_error": error}
                    except Exception as failure:  # noqa: BLE001 - a probe: record and go on
                        row["configs"][str(tuple(config))] = {"error": repr(failure)[:300]}
                depthwise.heuristic = real_heuristic
        layers.append(row)
        print(json.dumps(row), flush=True)
        (out / "probe.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                                    "triton": __import__("triton").__version__, "layers": layers}, indent=1))
    lines = ["| layer | floor us | cuDNN us | Inductor us | pixel tiles before us | column groups, best us (config) | heuristic now us |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in layers:
        timed = {c: v["us"] for c, v in row["configs"].items() if "us" in v}
        before = timed.get(str(PIXEL_BEFORE[int(row["layer"].split("_")[-1])]))
        columns = {c: t for c, t in timed.items() if not c.endswith(" 0)")}
        best = min(columns, key=columns.get) if columns else None
        now = timed.get(str(tuple(row["heuristic"])))
        cells = [f"{v:.1f}" if isinstance(v, float) else "-" for v in (row["floor_us"], row["eager_us"], row["inductor_us"], before)]
        cells.append(f"{columns[best]:.1f} {best}" if best else "-")
        cells.append(f"{now:.1f}" if now else "-")
        lines.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
