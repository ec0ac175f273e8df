"""A depthwise-convolution fusion group → Triton source from ``templates/depthwise_conv.py.jinja``.

The group (``passes/fusion_conv.py``) is one depthwise ``aten.convolution`` plus the pointwise work
that consumes its output over the same iteration space [N, C, OH, OW]. The template computes the
convolution tile by tile (output pixels x channels); the epilogue is written by the same machinery
as a pointwise kernel (:class:`~ait_dynamo.kernels.codegen.KernelWriter`), evaluated on the
accumulator tile, as ``codegen_gemm`` does for GEMMs. The convolution's value, rounded to its dtype
as eager rounds it, is the accumulator plus the bias where there is one; where something outside
the group reads it, it is one more output of the kernel.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import fx

from ait_dynamo import faults
from ait_dynamo.kernels import depthwise
from ait_dynamo.kernels.codegen import GeneratedKernel, KernelWriter, _bytes_moved, _contiguous, _warmup_args
from ait_dynamo.kernels.triton_values import round_to
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.sizes import is_one


def conv_node(group: FusionGroup) -> fx.Node:
    return next(n for n in group.nodes if n.target is torch.ops.aten.convolution.default)


class ConvWriter(KernelWriter):
    """:class:`KernelWriter` whose iteration space [N, C, OH, OW] is walked as the template's tile:
    rows are output pixels (dims 0, 2, 3 flattened), columns are channels (dim 1)."""

    def __init__(self, group: FusionGroup, name: str, tensor_name: Callable[[fx.Node], str]):
        super().__init__(group, name, tensor_name)
        self.x_dims = list(range(len(self.space)))  # the tile's own order, not a memory-order walk
        self.x_nonunit = [d for d in self.x_dims if not is_one(self.space[d])]
        self.x_contig = _contiguous(self.space, self.x_dims)
        self.conv = conv_node(group)
        self.g = depthwise.geometry(self.conv)

    def tile_shape(self, uses_r: bool) -> str:
        return "[BLOCK_M, BLOCK_N]"

    def store_offset(self, offset: str, uses_x: bool, dim_map: tuple) -> str:
        # an offset that does not run along every non-unit dim (an output broadcast along one)
        # is narrower than the tile: widen it (xindex spans the tile)
        covered = {m for m in dim_map if m is not None}
        return offset if set(self.x_nonunit) <= covered else f"{offset} + 0 * xindex"

    def value(self, node: fx.Node) -> tuple[str, bool]:
        if node is not self.conv:
            return super().value(node)
        cache = self._cache(False)
        if node in cache:
            return cache[node]
        _, _, bias = depthwise.operands(node)
        expr = "acc"
        if bias is not None:  # one value per channel: iteration dim 1
            loaded, _ = self.load(bias, (None if is_one(self.g["c"]) else 1,))
            expr = f"acc + {loaded}"
        var = self._tmp(round_to(expr, node.meta["val"].dtype), False)
        cache[node] = (var, False)
        return var, False

    def index_lines(self, level: str) -> list[str]:
        if level != "x":
            return []
        g = self.g
        index = {0: f"rm[:, None] // {g['oh'] * g['ow']}", 1: "rn[None, :]",
                 2: f"(rm[:, None] // {g['ow']}) % {g['oh']}", 3: f"rm[:, None] % {g['ow']}"}
        return [f"x{d} = {index[d]}" for d in self.x_dims if ("x", d) in self.used_dims]

    def flat_index(self) -> str:
        """Row-major flat index of each tile element over [N, C, OH, OW] (what ``Access`` uses for
        accesses laid out contiguously)."""
        g = self.g
        plane = g["oh"] * g["ow"]
        return f"(rm[:, None] // {plane}) * {g['c'] * plane} + rn[None, :] * {plane} + rm[:, None] % {plane}"

    def operand(self, node: fx.Node) -> tuple[tuple[str, str], tuple[str, ...]]:
        """((pointer parameter, element offset), strides) of the input or the weight."""
        strides = tuple(str(s) for s in node.meta["val"].stride())
        return (self.input_params[node], str(self.input_offsets.get(node, 0))), strides


def _warmup(writer: ConvWriter, numel: int) -> tuple | None:
    """(tensor dtypes, int arguments) of the launch, for compiling ahead of it
    (``kernels/precompile.py``): the pointwise kernels' arguments without their trailing element
    count, which the template does not take (its sizes are in its source)."""
    spec = _warmup_args(writer, [numel], [])
    return None if spec is None else (spec[0], spec[1][:-1])


def generate_conv_kernel(group: FusionGroup, tensor_name: Callable[[fx.Node], str]) -> GeneratedKernel:
    from ait_dynamo.kernels.wrapper import render_template

    name = group.name
    writer = ConvWriter(group, name, tensor_name)
    conv = writer.conv
    x, w, _ = depthwise.operands(conv)
    body = writer.body()
    if faults.active("compile", name):
        body = ['tl.static_assert(False, "ait_dynamo: injected compile failure")'] + body
    x_param, x_strides = writer.operand(x)
    w_param, w_strides = writer.operand(w)
    g = writer.g
    source = render_template(
        "depthwise_conv.py.jinja",
        name=name,
        tensor_params=writer.tensor_params,
        int_params=writer.int_params,
        x=x_param,
        w=w_param,
        x_strides=x_strides,
        w_strides=(w_strides[0], w_strides[2], w_strides[3]),
        g=g,
        int64=writer.int64,
        xindex=writer.flat_index(),
        x_index=writer.index_lines("x"),
        body=body,
        column_taps=depthwise.column_taps(g),
        max_cols=depthwise.MAX_COLS,
        ops=", ".join(str(node.target) for node in group.nodes),
    )
    pixels = g["n"] * g["oh"] * g["ow"]
    return GeneratedKernel(
        name=name,
        source=source,
        kind="conv",
        persistent=True,
        column=False,
        split=False,
        args=writer.args,
        xnumel=[pixels * g["c"]],
        rnumel=[],
        out_buffers=writer.out_buffers,
        bytes_moved=_bytes_moved(group),
        inplace_candidates={},  # every program reads a halo of input rows around its own
        device_type=group.outputs[0].meta["val"].device.type,
        warmup=_warmup(writer, pixels * g["c"]),
        gemm=depthwise.problem(g),
        gemm_dtype=conv.meta["val"].dtype,
    )
