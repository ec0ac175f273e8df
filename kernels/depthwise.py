"""Depthwise 2-d convolutions as a template kernel with a fused epilogue (issue 13, item 4).

A depthwise convolution (``groups`` = input channels = output channels: MobileNet's and
EfficientNet's 3x3 / 5x5, ConvNeXt's 7x7) does KH * KW multiply-adds per output element: it is
bound by memory, not by math, and what it costs beside cuDNN's kernel is the pass after it that
applies the folded batch norm and the activation (Inductor runs that pass too). The template
(``templates/depthwise_conv.py.jinja``, written by ``kernels/codegen_conv.py``) computes a tile
of output pixels x channels and applies the epilogue the fusion planner gives it
(``passes/fusion_conv.py``) on the tile, as the GEMM template does: the convolution's output is
never written and read back.

Whether the template or cuDNN computes a convolution follows the GEMM rule of option
``gemm_backends`` (``kernels/gemm_choice.backend_choice``): with only ``"triton"`` the template
wherever Triton runs (the CPU tests, under the interpreter), with ``"aten"`` too a measurement
on CUDA with ``autotune`` (``kernels/gemm_tuning.py``: the template with its epilogue against
cuDNN plus the bytes the epilogue adds to ait's kernels), else cuDNN.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import fx

from ait_dynamo.kernels.gemm_choice import TEMPLATE_DTYPES
from ait_dynamo.passes.graph_utils import meta_value

aten = torch.ops.aten

# (BLOCK_M output pixels, BLOCK_N channels, num_warps, ROWS, COLS). Channels are the contiguous dim
# of a channels-last activation, so a tile's loads are coalesced along BLOCK_N. Three tilings (the
# template's doc):
#   pixels   ROWS = COLS = 0: BLOCK_M consecutive pixels, every tap one load of the tile's inputs;
#   rows     ROWS > 0: ROWS output rows of BLOCK_M // ROWS columns, each input row loaded once per
#            horizontal tap for all the rows it feeds;
#   columns  COLS > 0 (4 or 8): BLOCK_M // COLS groups of COLS neighbouring output columns, each
#            input column a group reads loaded once per tap row for all the columns it feeds.
# With ``autotune`` they are measured per problem (kernels/autotune.py), without it
# :func:`heuristic` picks one.
Config = tuple[int, int, int, int, int]
CONFIGS: tuple[Config, ...] = (
    (64, 64, 4, 0, 0), (128, 32, 4, 0, 0), (32, 128, 4, 0, 0), (128, 64, 8, 0, 0), (64, 128, 8, 0, 0),
    (256, 32, 8, 0, 0), (16, 64, 2, 0, 0), (32, 32, 2, 0, 0),
)
ROW_CONFIGS: tuple[Config, ...] = (
    (64, 32, 4, 4, 0), (32, 64, 4, 4, 0), (64, 64, 4, 8, 0), (128, 32, 8, 8, 0), (64, 128, 8, 4, 0),
    (128, 64, 8, 4, 0), (32, 32, 2, 4, 0), (64, 32, 4, 8, 0),
)
# The column tiling exists for the instructions a 7x7 tap costs. The pixel tiling's loop (triton
# 3.9, sm_90, ConvNeXt-T's 96-channel layer, (128, 32, 4)) is 716 SASS instructions a thread for 7
# taps of 32 outputs, 3.2 a tap and output: a load and an fp16 -> fp32 conversion of the input for
# every tap, beside the multiply-add. In groups of COLS columns an input column is loaded and
# converted once for the (up to) KW outputs it feeds: 394 instructions for 7 taps of 32 outputs
# at (128, 32, 4) with COLS = 8 (1.8 a tap and output), 463 with COLS = 4 (2.1), counted in the SASS
# (benchmarks/results/cpu-epyc/depthwise_columns_sass/); on the H100 the layer took 44.6 us
# against 81.8 (:data:`COLUMN_TILING_WIDTH`). 256-pixel tiles of 4 warps took 220-252 registers:
# 8 warps for them.
COLUMN_CONFIGS: tuple[Config, ...] = (
    (128, 32, 4, 0, 8), (256, 32, 8, 0, 8), (64, 32, 2, 0, 8), (128, 64, 8, 0, 8), (256, 64, 8, 0, 8),
    (128, 32, 4, 0, 4), (256, 32, 8, 0, 4), (64, 64, 4, 0, 4),
)
# The widest group of columns the template writes (its accumulators, one per column of a group)
MAX_COLS = 8
# The row tiling was meant for stride 1 and a tall kernel (ConvNeXt's 7x7: 17.5 loads per output
# row with ROWS = 4, against 49, for (ROWS + KH - 1) / KH of the multiply-adds). Measured on an H100
# (benchmarks/results/nvidia-h100/session_1205c/depthwise_rows/: ConvNeXt-T's first 7x7 layer,
# 96 channels at 56x56, batch 32, fp16) it lost to the pixel tiling: 157-303 us for the 8 row
# configurations against 101-247 us for six of the pixel ones (the other two took 3.3 ms), cuDNN 92 us.
# So the heuristic takes pixel tiles (column groups for kernels 7 wide or more, below);
# ``autotune`` still measures the row tiling for stride 1. Those timings are of the template
# before its tap loops ran at run time (b7493f0): six of the pixel configurations then used 255
# registers or spilled, the two at 3.3 ms 7-7.6 KB a thread.
# The kernel width from which the heuristic takes column groups. Measured on an H100 (c43aa8f,
# benchmarks/results/nvidia-h100/session_1206/, GPU time per call in a CUDA-graph replay, fp16
# batch 32, bias fused) on ConvNeXt-T's four 7x7 layers: (128, 32, 4, 0, 8) took 44.6 / 28.9 /
# 17.0 / 8.2 us against 81.8 / 40.9 / 23.2 / 14.9 for the pixel tiles the heuristic took before
# and cuDNN's 92.5 / 53.2 / 29.2 / 21.4; the best column configuration was at most 9% faster on
# each ((64, 32, 2, 0, 8) on the last three). Narrower kernels (MobileNet's and EfficientNet's
# 3x3 / 5x5) are not measured in this tiling yet: they keep pixel tiles unless ``autotune``
# measures them.
COLUMN_TILING_WIDTH = 7
# Under the interpreter (one program at a time through numpy): few, large tiles
INTERPRETER_CONFIG: Config = (64, 64, 4, 0, 0)


def operands(node: fx.Node) -> tuple[fx.Node, fx.Node, Any]:
    """(input, weight, bias or None) of an ``aten.convolution``."""
    return node.args[0], node.args[1], node.args[2]


def geometry(node: fx.Node) -> dict[str, int]:
    """Sizes the template specialises on: batch, channels, input and output height / width,
    kernel height / width, stride, padding, dilation (each per axis)."""
    x, w, _ = (meta_value(a) if isinstance(a, fx.Node) else None for a in operands(node))
    out = meta_value(node)
    stride, padding, dilation = (list(node.args[i]) for i in (3, 4, 5))
    return {"n": int(out.shape[0]), "c": int(out.shape[1]), "h": int(x.shape[2]), "w": int(x.shape[3]),
            "oh": int(out.shape[2]), "ow": int(out.shape[3]), "kh": int(w.shape[2]), "kw": int(w.shape[3]),
            "sh": int(stride[0]), "sw": int(stride[-1]), "ph": int(padding[0]), "pw": int(padding[-1]),
            "dh": int(dilation[0]), "dw": int(dilation[-1])}


def _static(value: torch.Tensor) -> bool:
    return all(isinstance(v, int) for v in (*value.shape, *value.stride(), value.storage_offset()))


def refusal(node: fx.Node) -> str | None:
    """Why the template cannot compute this convolution, or ``None`` when it can."""
    if node.target is not aten.convolution.default or len(node.args) < 9:
        return f"{node.target} is not aten.convolution"
    x, w, bias = operands(node)
    stride, padding, dilation, transposed, _, groups = node.args[3:9]
    if not isinstance(x, fx.Node) or not isinstance(w, fx.Node) or (bias is not None and not isinstance(bias, fx.Node)):
        return "convolution operand is not a tensor node"
    values = [meta_value(v) for v in (x, w, bias) if v is not None]
    out = meta_value(node)
    if not isinstance(out, torch.Tensor) or not all(isinstance(v, torch.Tensor) for v in values):
        return "convolution operand without a traced tensor value"
    if transposed or out.dim() != 4 or values[1].dim() != 4:
        return "not a 2-d, non-transposed convolution"
    if not isinstance(groups, int) or groups == 1 or tuple(values[1].shape[:2]) != (groups, 1) \
            or values[0].shape[1] != groups:
        return "not depthwise (groups = input channels = output channels)"
    if out.dtype not in TEMPLATE_DTYPES or any(v.dtype != out.dtype for v in values):
        return f"convolution in {out.dtype} (the template takes one of fp16, bf16, fp32 for all operands)"
    if any(v.device != out.device for v in values) or any(v.layout != torch.strided for v in [out, *values]):
        return "convolution operands on several devices or not strided"
    if not all(_static(v) for v in [out, *values]):
        return "convolution with symbolic sizes or strides (the template specialises on them)"
    if not all(isinstance(v, int) for v in (*stride, *padding, *dilation)) or len(stride) != 2:
        return "convolution with non-integer stride, padding or dilation"
    if out.numel() == 0:
        return "empty convolution"
    return None


def widest_tile(channels: int) -> int:
    """The widest channel tile worth running: the channels rounded up to a power of two, at least
    32 (the narrowest tile). Measured on the H200 (9c17fe4, EfficientNet-B0's 32-channel layer
    at batch 32): 64-wide tiles, half idle, took 0.072-0.110 ms, 32-wide ones 0.037-0.064."""
    return max(32, 1 << max(0, channels - 1).bit_length())


def problem(g: dict[str, int]) -> tuple[int, ...]:
    """What a launch needs of a convolution's geometry (the rest is in the kernel's source):
    (images, channels, output rows, output columns, kernel height, vertical stride, kernel width,
    horizontal stride). Six values (no width, no horizontal stride) mean a square kernel of equal
    strides."""
    return (g["n"], g["c"], g["oh"], g["ow"], g["kh"], g["sh"], g["kw"], g["sw"])


def _width_and_stride(shape: tuple[int, ...]) -> tuple[int, int]:
    """(kernel width, horizontal stride) of a :func:`problem`."""
    return (shape[6], shape[7]) if len(shape) >= 8 else (shape[4], shape[5])


def _row_tiling_fits(shape: tuple[int, ...]) -> bool:
    rows, kernel_height, stride = shape[2], shape[4], shape[5]
    return stride == 1 and kernel_height > 1 and rows > 1


def _column_tiling_fits(shape: tuple[int, ...]) -> bool:
    """Neighbouring output columns share input columns: stride 1 across, a kernel wider than one
    column, an output of more than one column."""
    width, stride = _width_and_stride(shape)
    return stride == 1 and width > 1 and shape[3] > 1


def column_groups(columns: int, cols: int) -> int:
    """Groups of ``cols`` output columns in a row of ``columns`` (the last one may be partial)."""
    return -(-columns // cols)


def programs(shape: tuple[int, ...], config: tuple[int, ...]) -> int:
    """Programs a configuration launches: pixel tiles x channel tiles."""
    images, channels, rows, columns = shape[:4]
    block_m, block_n, _, tile_rows, cols = config
    if tile_rows:
        pixel_tiles = images * -(-rows // tile_rows) * -(-columns // (block_m // tile_rows))
    elif cols:
        pixel_tiles = -(-(images * rows * column_groups(columns, cols)) // (block_m // cols))
    else:
        pixel_tiles = -(-(images * rows * columns) // block_m)
    return pixel_tiles * -(-channels // block_n)


def _fitting(shape: tuple[int, ...], tiling: str) -> list[Config]:
    """The configurations of one tiling (``"pixels"``, ``"rows"``, ``"columns"``) whose channel tile
    is no wider than :func:`widest_tile`; row tiles no wider than the output's rows rounded up to
    a power of two (ConvNeXt's last stage is 7 wide: an 8-wide tile, not a 16-wide one half idle),
    column groups no wider than that either."""
    channels, columns = shape[1], shape[3]
    widest_row = max(8, 1 << max(0, columns - 1).bit_length())
    if tiling == "pixels":
        return [c for c in CONFIGS if c[1] <= widest_tile(channels)]
    if tiling == "rows":
        return [c for c in ROW_CONFIGS if c[1] <= widest_tile(channels) and c[0] // c[3] <= widest_row]
    return [c for c in COLUMN_CONFIGS if c[1] <= widest_tile(channels) and c[4] <= widest_row]


def heuristic(shape: tuple[int, ...]) -> Config:
    """A configuration without measuring (``shape``: :func:`problem`): column groups where the
    column tiling fits and the kernel is at least :data:`COLUMN_TILING_WIDTH` wide, else pixel
    tiles (row tiles lost where they were measured: see :data:`ROW_CONFIGS`); the first
    configuration that still gives every SM a program (the GEMM heuristic's rule), else the one
    that makes the most programs. Channel tiles that divide the channels come first: measured on
    an H100 (e9cbe77, ``benchmarks/results/nvidia-h100/session_1205d/``), ConvNeXt-T's 96-channel
    7x7 layer took 115.8 us in 64-wide tiles (the second tile half idle) and 81.6 us in 32-wide ones."""
    from ait_dynamo.kernels.gemm_configs import SMS

    wide = _column_tiling_fits(shape) and _width_and_stride(shape)[0] >= COLUMN_TILING_WIDTH
    fitting = _fitting(shape, "columns" if wide else "pixels")
    channels = shape[1]
    whole = [c for c in fitting if channels % c[1] == 0]
    for config in whole + [c for c in fitting if c not in whole]:
        if programs(shape, config) >= SMS:
            return config
    return max(fitting, key=lambda c: programs(shape, c))


# The smallest kernel (taps) for which the template runs without a measurement on CUDA
# (:func:`default_on_cuda`). Measured on an H100 (e9cbe77, session_1205d): on ConvNeXt-T's four
# 7x7 layers (fp16, batch 32, channels-last) the template at its heuristic's configuration took
# 81.6 / 40.8 / 23.3 / 14.9 us against cuDNN's 92.1 / 53.2 / 29.2 / 21.2 (bias included on both),
# in column groups 44.6 / 28.9 / 17.0 / 8.2 (c43aa8f, session_1206).
# The 3x3 and 5x5 layers of MobileNetV3 and EfficientNet stay with cuDNN unless ``autotune``
# measures them: the template won there in the micro family (H200, 27506ff) but bought nothing in
# the whole models (benchmarks/results/nvidia-h200/depthwise/README.md).
DEFAULT_TEMPLATE_TAPS = 49


def default_on_cuda(node: fx.Node) -> bool:
    """Whether a depthwise convolution the template computes takes it on CUDA without measuring:
    a kernel of :data:`DEFAULT_TEMPLATE_TAPS` taps or more, stride 1, 16-bit floats and a
    channels-last input (the template's loads run along channels), as measured."""
    g = geometry(node)
    x = meta_value(operands(node)[0])
    return (x.device.type == "cuda" and g["kh"] * g["kw"] >= DEFAULT_TEMPLATE_TAPS
            and (g["sh"], g["sw"], g["dh"], g["dw"]) == (1, 1, 1, 1)
            and x.dtype in (torch.float16, torch.bfloat16) and x.stride(1) == 1)


def candidates(shape: tuple[int, ...]) -> list[Config]:
    """What ``autotune`` measures: the heuristic's choice first, then the pixel tilings no taller
    than the work, then for stride-1 convolutions the row tilings and the column tilings. Where the
    heuristic takes column groups (kernels :data:`COLUMN_TILING_WIDTH` wide or more), only the
    column tilings: on the H100 (session_1206 and session_1205d) the heuristic's column
    configuration beat the best of the 8 pixel and 8 row configurations on each of ConvNeXt-T's
    four 7x7 layers (44.6 / 28.9 / 17.0 / 8.2 us against 81.6 / 40.8 / 23.3 / 14.9 and 147 / 67 /
    37 / 21), so compiling and timing them costs compile time for nothing."""
    first = heuristic(shape)
    if first[4]:
        return [first] + [c for c in _fitting(shape, "columns") if c != first]
    pixels = shape[0] * shape[2] * shape[3]
    found = [first] + [c for c in _fitting(shape, "pixels") if c != first and c[0] <= 2 * max(pixels, 16)]
    if _row_tiling_fits(shape):
        found += [c for c in _fitting(shape, "rows") if c not in found]
    if _column_tiling_fits(shape):
        found += [c for c in _fitting(shape, "columns") if c not in found]
    return found


def constexprs(config: tuple[int, ...]) -> dict[str, int]:
    block_m, block_n, _, rows, cols = config
    return {"BLOCK_M": block_m, "BLOCK_N": block_n, "ROWS": rows, "BLOCK_W": block_m // rows if rows else 1,
            "COLS": cols}


def column_taps(g: dict[str, int]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """The column tiling's loads, for the template: for each input column a group of output
    columns reads, (its offset from the group's first column x horizontal stride - padding, the
    first output column of the group it feeds, [(output column, horizontal tap) it feeds]), for
    groups of up to :data:`MAX_COLS` columns. Output column j reads input column
    (first + j) * SW + KW_i * DW - PW: offset j * SW + KW_i * DW."""
    feeds: dict[int, list[tuple[int, int]]] = {}
    for column in range(MAX_COLS):
        for tap in range(g["kw"]):
            feeds.setdefault(column * g["sw"] + tap * g["dw"], []).append((column, tap))
    return [(offset, min(j for j, _ in fed), sorted(fed)) for offset, fed in sorted(feeds.items())]


def launch(kernel: Any, tensors: Sequence[Any], ints: Sequence[int], shape: tuple[int, ...],
           tune: str | None = None) -> Any:
    """Launch a depthwise template kernel over ``shape`` (:func:`problem`): one program per tile
    along grid axis 0. ``tune`` (the kernel's source hash) measures :func:`candidates` once."""
    from ait_dynamo.kernels import runtime

    images, channels, rows, columns = shape[:4]
    if images * rows * columns == 0 or channels == 0:
        return None

    def run(config: tuple[int, ...]) -> Any:
        grid = (programs(shape, config), 1)
        values = constexprs(config)
        return runtime._launched(grid, values, config[2], runtime.launch(kernel, grid, (*tensors, *ints), values, config[2]))

    if runtime.INTERPRETING:
        return run(INTERPRETER_CONFIG)
    config: tuple[int, ...] = heuristic(shape)
    if runtime._tuning(tune, tensors):
        from ait_dynamo.kernels import autotune

        def compile_all(configs: Sequence[tuple[int, ...]]) -> None:
            runtime.warm_configs(kernel, (*tensors, *ints), configs, lambda c: {**constexprs(c), "num_warps": c[2]})

        # measured on the H200 (27506ff): compiled one after another, the 8 configurations took
        # 4-13 s per convolution, 100 s of MobileNetV3's compile
        config = autotune.choose(tune, shape, candidates(shape), run, prepare=compile_all)
    return run(config)
