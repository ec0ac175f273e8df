"""A GEMM fusion group → Triton source from ``templates/gemm.py.jinja``.

The group (``passes/fusion.py``) is an mm / addmm / bmm plus the pointwise work that consumes its
output over the same iteration space ([M, N], or [B, M, N] for bmm). The template computes the
product tile by tile; the epilogue is written by the same machinery as a pointwise kernel
(:class:`~ait_dynamo.kernels.codegen.KernelWriter`: op-table expressions, loads of other inputs
broadcast by their strides, stores with each output's strides), evaluated on the accumulator
tile. The per-dim indices of the iteration space are the tile's rows and columns (and the batch
program id), and ``xmask`` is the tile's edge mask. The product itself, rounded to the GEMM's
dtype as eager rounds it, is the value of the GEMM node; where something outside the group reads
it (the pre-activation saved for the backward), it is one more output of the kernel.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import fx

from ait_dynamo import faults
from ait_dynamo.kernels import op_table
from ait_dynamo.kernels.codegen import GeneratedKernel, KernelWriter, _bytes_moved, _contiguous, _wrong_value
from ait_dynamo.kernels.gemm_choice import TRANSPOSES, gemm_node, operands, scalars
from ait_dynamo.kernels.triton_values import Operand, compute_dtype, literal, round_to, to_storage
from ait_dynamo.passes.fusion_maps import broadcast_map
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.sizes import is_one


# float32 GEMMs with a K above this sum each BLOCK_K slice apart and add it to the accumulator
# with Kahan's compensation (``blocked_sum`` in the template) instead of chaining every product
# into it: the chain's rounding error grows with K. On the H200 (diagnose.py under
# benchmarks/results/nvidia-h200/gemm_template/) a K = 1000 weight gradient came out at 2.2x
# cuBLAS's RMSE against float64 and 4.4x its worst error (cuBLAS presumably splits that K: its
# K = 257 GEMMs came out bit-identical to the template's). A plain ``acc += tl.dot(a, b)`` changed
# nothing there (2.2x / 3.5x, diagnose_1202/): Triton's dot-add combine folds it back into the
# chain; the compensation's subtraction keeps the slices apart. The cost, not measured yet, is four
# adds per tile element and K slice, against BLOCK_K (32) FMAs of float32's dot. fp16 / bf16 keep
# the chain for now: it is what lets Hopper's wgmma accumulate asynchronously. Their long-K
# results drift from cuBLAS's too (diagnose.py: up to 5x cuBLAS's error on cancelling elements of
# that weight gradient) yet stay within eager's error distribution; whether blocked sums cost them
# speed is to be measured.
BLOCKED_SUM_MIN_K = 256


def tma_supported() -> bool:
    """Whether the installed Triton has device-side tensor descriptors (``tl.make_tensor_descriptor``,
    Triton 3.4 on; the persistent TMA path of the template needs them): where it has not, kernels
    are generated without that path, as before."""
    import triton.language as tl

    return hasattr(tl, "make_tensor_descriptor")


def dot_options(dtype: torch.dtype) -> str:
    """tl.dot's precision argument: fp32 operands follow ``torch.backends.cuda.matmul.allow_tf32``
    as cuBLAS does. Triton 3.x names it ``input_precision``; older ones ``allow_tf32``."""
    if dtype != torch.float32:
        return ""
    import triton.language as tl

    tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    if "input_precision" in inspect.signature(tl.dot).parameters:
        return f', input_precision="{"tf32" if tf32 else "ieee"}"'
    return f", allow_tf32={tf32}"


class GemmWriter(KernelWriter):
    """:class:`KernelWriter` whose iteration space is walked as a GEMM's output tile."""

    def __init__(self, group: FusionGroup, name: str, tensor_name: Callable[[fx.Node], str]):
        super().__init__(group, name, tensor_name)
        # the tile's rows and columns are the space's dims in order: no memory-order walk
        self.x_dims = list(range(len(self.space)))
        self.x_nonunit = [d for d in self.x_dims if not is_one(self.space[d])]
        self.x_contig = _contiguous(self.space, self.x_dims)
        self.gemm = gemm_node(group)
        self.batched = self.gemm.target is torch.ops.aten.bmm.default
        self.rows = list(group.gemm_rows)  # iteration dims the tile's rows run over (row-major)
        self.columns = len(self.space) - 1

    def tile_shape(self, uses_r: bool) -> str:
        return "[BLOCK_M, BLOCK_N]"

    def store_offset(self, offset: str, uses_x: bool, dim_map: tuple) -> str:
        # an offset that does not run along every row and column dim (a size-1 dim, an output
        # broadcast along one) is narrower than the tile: widen it (xindex spans the tile)
        covered = {m for m in dim_map if m is not None}
        return offset if set(self.rows + [self.columns]) <= covered else f"{offset} + 0 * xindex"

    def value(self, node: fx.Node) -> tuple[str, bool]:
        if node is not self.gemm:
            return super().value(node)
        cache = self._cache(False)
        if node in cache:
            return cache[node]
        meta = node.meta["val"]
        expr = "acc"
        bias, _, _ = operands(node)
        beta, alpha = scalars(node)
        if alpha != 1:
            expr = f"acc * {literal(alpha, torch.float32)}"
        if bias is not None and beta != 0:  # beta == 0 ignores the bias, NaN included (as ATen)
            bias_meta = bias.meta["val"]
            dim_map = broadcast_map(tuple(bias_meta.shape), tuple(meta.shape), self.group.dim_maps[node])
            loaded, _ = self.load(bias, dim_map)
            scaled = loaded if beta == 1 else f"{loaded} * {literal(beta, torch.float32)}"
            expr = f"{expr} + {scaled}"
        var = self._tmp(round_to(expr, meta.dtype), False)
        cache[node] = (var, False)
        return var, False

    def index_lines(self, level: str) -> list[str]:
        """x<d> of the tile: the batch program, the rows (div/mod of ``rm`` where the rows run
        over several dims of a reshaped product), the columns."""
        if level != "x":
            return []
        index = {self.columns: "rn[None, :]"}
        if self.batched:
            index[0] = "pid_b"
        for position, d in enumerate(self.rows):
            inner = 1
            for later in self.rows[position + 1:]:
                inner *= int(self.space[later])
            expr = "rm[:, None]" if inner == 1 else f"(rm[:, None] // {inner})"
            if position > 0:
                expr = f"{expr} % {int(self.space[d])}"
            index[d] = expr
        return [f"x{d} = {index[d]}" for d in self.x_dims if ("x", d) in self.used_dims]

    def flat_index(self) -> str:
        """Row-major flat index of each tile element over the iteration space (what ``Access``
        uses for contiguous accesses): batch, then rows, then columns, whatever dims are 1."""
        n = int(self.space[self.columns])
        rows = 1
        for d in self.rows:
            rows *= int(self.space[d])
        flat = f"rm[:, None] * {n} + rn[None, :]"
        return f"pid_b * {rows * n} + {flat}" if self.batched else flat

    def store(self, node: fx.Node, buffer_index: int) -> None:
        if node is not self.gemm:
            super().store(node, buffer_index)
            return
        # the product itself (the pre-activation a backward reads): indexed by the tile's rows
        # and columns directly, whatever the group's iteration space
        strides = [str(s) for s in node.meta["val"].stride()]
        offset = f"rm[:, None] * {strides[-2]} + rn[None, :] * {strides[-1]}"
        if self.batched:
            offset = f"pid_b * {strides[0]} + {offset}"
        var, _ = self.value(node)
        if faults.active("wrong_result", self.name):
            var = _wrong_value(var, node.meta["val"].dtype)
        self._lines().append(f"tl.store(out_ptr{buffer_index} + ({offset}), {to_storage(var, node.meta['val'].dtype)}, xmask)")
        self.store_offsets[buffer_index] = offset

    def tma_operand(self, node: fx.Node, rows: str, columns: str) -> dict | None:
        """The tensor descriptor through which the persistent path loads operand ``node`` (A: rows
        M, columns K; B: rows K, columns N), or None where TMA cannot: a batched product, an
        offset into the tensor, sizes or strides known only at run time, no unit stride, a
        broadcast, or a row pitch that is not a multiple of 16 bytes (the copy engine's rule). Over the
        operand as stored: a transposed operand (``nn.Linear``'s weight as B) is described as
        the matrix it transposes, and its tiles are transposed after the load."""
        if self.batched:
            return None
        read = node
        if node in self.members:
            op = node.args[0] if node.target in TRANSPOSES else node
            read = op.args[0]
        if str(self.input_offsets.get(read, 0)) != "0":
            return None
        meta = node.meta["val"]
        size = read.meta["val"].element_size()
        (n_rows, n_columns), (row_stride, column_stride) = meta.shape[-2:], meta.stride()[-2:]
        if not all(isinstance(v, int) for v in (n_rows, n_columns, row_stride, column_stride)) or size not in (2, 4):
            return None
        # the other stride must step past a whole row (a broadcast operand's 0 does not: no TMA)
        if column_stride == 1 and row_stride >= max(n_columns, 1) and (row_stride * size) % 16 == 0:
            return {"shape": [n_rows, n_columns], "strides": [row_stride, 1], "block": [rows, columns],
                    "transposed": False}
        if row_stride == 1 and column_stride >= max(n_rows, 1) and (column_stride * size) % 16 == 0:
            return {"shape": [n_columns, n_rows], "strides": [column_stride, 1], "block": [columns, rows],
                    "transposed": True}
        return None

    def operand(self, node: fx.Node, tile: str) -> tuple[str, str, tuple[str, str, str], str]:
        """(pointer parameter, element offset, (batch, row, column) strides, prologue expression
        or "") of A or B. A prologue member (passes/fusion_gemm.py) is computed from its
        source's tile: the operand's strides address the source as they address the result."""
        meta = node.meta["val"]
        strides = [str(s) for s in meta.stride()]
        if len(strides) == 2:
            strides = ["0"] + strides
        prologue = ""
        read = node
        if node in self.members:
            op = node.args[0] if node.target in TRANSPOSES else node
            read = op.args[0]
            source = read.meta["val"]
            loaded = tile if compute_dtype(source.dtype) == source.dtype else f"{tile}.to(tl.float32)"

            def argument(value: object) -> object:
                return Operand(loaded, source.dtype) if value is read else value

            expr = op_table.POINTWISE[op.target].emit(*[argument(a) for a in op.args],
                                                      **{k: argument(v) for k, v in op.kwargs.items()})
            prologue = to_storage(expr, op.meta["val"].dtype)
        return self.input_params[read], str(self.input_offsets.get(read, 0)), (strides[0], strides[1], strides[2]), prologue


def generate_gemm_kernel(group: FusionGroup, tensor_name: Callable[[fx.Node], str]) -> GeneratedKernel:
    from ait_dynamo.kernels.wrapper import render_template

    name = group.name
    writer = GemmWriter(group, name, tensor_name)
    gemm = writer.gemm
    _, a, b = operands(gemm)
    a_meta, b_meta = a.meta["val"], b.meta["val"]
    batch = int(a_meta.shape[0]) if writer.batched else 1
    m, k = int(a_meta.shape[-2]), int(a_meta.shape[-1])
    n = int(b_meta.shape[-1])
    body = writer.body()
    if faults.active("compile", name):
        body = ['tl.static_assert(False, "ait_dynamo: injected compile failure")'] + body
    a_param, a_offset, a_strides, a_prologue = writer.operand(a, "a_tile")
    b_param, b_offset, b_strides, b_prologue = writer.operand(b, "b_tile")
    tma = (writer.tma_operand(a, "BLOCK_M", "BLOCK_K"), writer.tma_operand(b, "BLOCK_K", "BLOCK_N"))
    source = render_template(
        "gemm.py.jinja",
        name=name,
        tensor_params=writer.tensor_params,
        int_params=writer.int_params,
        a=(a_param, a_offset),
        b=(b_param, b_offset),
        a_strides=a_strides,
        a_prologue=a_prologue,
        b_prologue=b_prologue,
        b_strides=b_strides,
        m=str(m),
        n=str(n),
        k=str(k),
        batched=writer.batched,
        int64=writer.int64,
        dot_options=dot_options(a_meta.dtype),
        blocked_sum=a_meta.dtype == torch.float32 and k > BLOCKED_SUM_MIN_K,
        tma=tma if None not in tma and tma_supported() else None,
        xindex=writer.flat_index(),
        x_index=writer.index_lines("x"),
        body=body,
        ops=", ".join(str(node.target) for node in group.nodes),
    )
    return GeneratedKernel(
        name=name,
        source=source,
        kind="gemm",
        persistent=True,
        column=False,
        split=False,
        args=writer.args,
        xnumel=[batch * m * n],
        rnumel=[],
        out_buffers=writer.out_buffers,
        bytes_moved=_bytes_moved(group),
        inplace_candidates={},  # every program reads whole rows of A and columns of B
        device_type=group.outputs[0].meta["val"].device.type,
        warmup=None,
        gemm=(batch, m, n, k),
        gemm_dtype=a_meta.dtype,
    )
