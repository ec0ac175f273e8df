"""FusionGroup → Triton kernel source (from ``templates/*.py.jinja``) and its launch arguments.

Index arithmetic: the kernel walks the group's iteration space; ``xindex`` runs over the kept
dims (row-major), ``rindex`` over the reduced dims. ``x<d>`` / ``r<d>`` are the per-dim indices,
derived by div/mod only where an access needs them: an access whose strides are contiguous over
the iteration space uses the flat index directly, which keeps Triton's loads vectorised.
Every expression comes from the op table; this module only wires loads, stores and reductions.
"""

from __future__ import annotations

import hashlib

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo import faults
from ait_dynamo.kernels import op_table
from ait_dynamo.kernels.codegen_access import Access, hashable_size, times, UnitStride
from ait_dynamo.kernels.codegen_reductions import ReductionWriter
from ait_dynamo.kernels.codegen_shifted import ShiftedLoadWriter
from ait_dynamo.kernels.column_reduction import (SplitSources, is_column_layout, reads_reduction, row_splits, split_sources,
                                                 static_splits)
from ait_dynamo.kernels.loop_order import memory_order
from ait_dynamo.kernels.reuse import inplace_candidates
from ait_dynamo.kernels.triton_values import Operand, SizeScalar, compute_dtype, round_to, to_storage, triton_type
from ait_dynamo.passes.fusion_groups import SHIFTED_LOADS
from ait_dynamo.passes.fusion_maps import broadcast_map
from ait_dynamo.passes.host_scalars import is_host_scalar_value
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.sizes import is_one, provably, static_int

_INT32_LIMIT = 2**31 - 1
PERSISTENT_MAX_ROW = 8192  # rows up to this many elements stay in registers (one pass)


# What a kernel is compiled ahead of time or timed with in place of the scalars a call draws or
# reads: a seed neither 1 nor a multiple of 16 (the specialization most seeds get), and any float
# for a host scalar (Triton types a Python float argument float32).
STAND_IN_SCALARS: dict[str, int | float] = {"seed": 3, "item": 0.5}


@dataclass
class KernelArgs:
    """What the wrapper passes: tensors (by node or output buffer name) then scalars: integer
    sizes and strides, random seeds, and the values of 0-d CPU tensors (``("item", name)``)."""

    tensors: list[str] = field(default_factory=list)  # wrapper expressions
    ints: list[Any] = field(default_factory=list)  # ("size", value) | ("stride", tensor_expr, dim) | ("seed", name) | ("rsplit",) | ("item", tensor_expr)


@dataclass
class GeneratedKernel:
    name: str
    source: str
    kind: str  # "pointwise" | "reduction" | "gemm" | "conv" (a depthwise convolution: codegen_conv.py)
    persistent: bool
    column: bool
    split: bool
    args: KernelArgs
    xnumel: list[Any]  # factors of the kept-space size
    rnumel: list[Any]  # factors of the reduced-space size
    out_buffers: list[tuple[fx.Node, str]]  # (node, wrapper name of the buffer it writes)
    bytes_moved: int | None
    # per output buffer, the inputs whose buffer it may take over (see kernels/reuse.py)
    inplace_candidates: dict[str, list[fx.Node]] = field(default_factory=dict)
    # split reductions: per output buffer written as float32 partial results, the dtypes their
    # sum is cast to in turn (the casts of the group's epilogue, applied by the kernel that adds
    # up the partial sums: kernels/split_sum.py); a split kernel's other outputs are written whole
    split_casts: dict[str, tuple[torch.dtype, ...]] = field(default_factory=dict)
    # per such buffer, the reduction whose partial results it holds ("sum", "max", "any", ...)
    split_kinds: dict[str, str] = field(default_factory=dict)
    device_type: str = "cuda"
    # (tensor dtypes, int args) with every value known statically, for compiling the kernel ahead
    # of its first launch (kernels/precompile.py); None under symbolic sizes
    warmup: tuple[tuple[torch.dtype, ...], tuple[int, ...]] | None = None

    @property
    def canonical_source(self) -> str:
        """The source with the kernel's name blanked: identical work, identical text (what the
        wrapper defines once, and what autotuning keys its choices by)."""
        return self.source.replace(f"def {self.name}(", "def _(", 1)

    @property
    def tune_key(self) -> str:
        """The key autotuning keeps a kernel's measured choice under (``kernels/autotune.py``;
        the GEMM backend choice measures under it too)."""
        return hashlib.sha256(self.canonical_source.encode()).hexdigest()[:20]
    # GEMM template kernels: (batch, M, N, K) and the operand dtype (kernels/codegen_gemm.py);
    # depthwise convolutions: their shape, ``depthwise.problem`` (kernels/codegen_conv.py)
    gemm: tuple[int, ...] | None = None
    gemm_dtype: torch.dtype | None = None


def _numel_factors(sizes: list[Any]) -> list[Any]:
    return [s for s in sizes if not is_one(s)]


class KernelWriter(ReductionWriter, ShiftedLoadWriter):
    """Writes the body of one kernel: loads, op-table expressions, reductions, stores."""

    def __init__(self, group: FusionGroup, name: str, tensor_name: Callable[[fx.Node], str]):
        self.group, self.name, self.tensor_name = group, name, tensor_name
        space = list(group.space)
        self.space = space
        reduced = set(group.reduced)
        self.r_dims = [d for d in range(len(space)) if d in reduced]
        self.x_dims = [d for d in range(len(space)) if d not in reduced]
        if not reduced:  # a reduction's rows keep the natural order (its columns: column_reduction.py)
            self.x_dims = memory_order(group, space, self.x_dims)
        self.x_nonunit = [d for d in self.x_dims if not is_one(space[d])]
        self.r_nonunit = [d for d in self.r_dims if not is_one(space[d])]
        self.x_contig = _contiguous(space, self.x_dims)
        self.r_contig = _contiguous(space, self.r_dims)
        self.rnumel_product = math.prod([1] + [space[d] for d in self.r_dims]) if self.r_dims else 1
        self.rnumel_name = "rnumel"
        self.is_reduction = bool(self.r_dims)
        rsize = static_int(self.rnumel_product) if self.is_reduction else None
        self.column = self.is_reduction and is_column_layout(group.inputs, space, self.x_nonunit, self.r_nonunit)
        # a column reduction walks rows in chunks with many columns per program (coalesced loads)
        self.persistent = not self.is_reduction or (
            rsize is not None and rsize <= PERSISTENT_MAX_ROW and not self.column
        )
        # few long columns, or few long rows of a looped kernel: split the rows over programs
        # (kernels/column_reduction.py)
        self.members = set(group.nodes)
        kept, reduced_sizes = [space[d] for d in self.x_dims], [space[d] for d in self.r_dims]
        sources = None
        if self.column:
            sources = split_sources(group, self.x_nonunit)
            if sources is not None and static_splits(kept, reduced_sizes) == 1:
                sources = None  # enough programs already: no partial sums to allocate and add up
        elif self.is_reduction and not self.persistent and row_splits(kept, reduced_sizes, PERSISTENT_MAX_ROW):
            sources = split_sources(group, self.x_nonunit)
        self.split = sources is not None
        self.split_sources: SplitSources = sources or {}
        # full-size outputs that read no reduction: stored in the first pass over the row, with
        # the reductions' accumulation, instead of a pass of their own that reads it again
        # (EfficientNet's squeeze-excitation pooling read its 25 MB input twice on the H200)
        self.early_stores: list[tuple[int, fx.Node]] = []
        self.early_stored = False
        self.args = KernelArgs()
        self.tensor_params: list[str] = []
        self.int_params: list[str] = []
        self.int_keys: dict[Any, str] = {}
        self.used_dims: set[tuple[str, int]] = set()
        self.counter = 0
        # for in-place buffer reuse (kernels/reuse.py): every load's (input, offset, stores
        # emitted before it) and every store's offset
        self.load_log: list[tuple[fx.Node, str, int]] = []
        self.store_offsets: dict[int, str | None] = {}  # None: no output may take an input's buffer
        self.outer: list[str] = []
        self.loop: list[str] | None = None
        self.row_cache: dict[Any, tuple[str, bool]] = {}
        self.full_cache: dict[Any, tuple[str, bool]] = {}
        self.reduction_vars: dict[fx.Node, str] = {}
        self.input_params: dict[fx.Node, str] = {}
        self.param_source: dict[str, str] = {}
        self.param_meta: dict[str, torch.Tensor] = {}
        self.input_offsets: dict[fx.Node, int] = {}
        self.host_scalars: set[fx.Node] = set()
        for index, node in enumerate(group.inputs):
            if is_host_scalar_value(node):  # a 0-d CPU tensor: its value is an argument (passes/host_scalars.py)
                self.input_params[node] = self.int_arg(("item", tensor_name(node)))
                self.host_scalars.add(node)
                continue
            param = f"in_ptr{index}"
            read = node
            if node in group.input_views:  # a view read in place: the base's pointer + offset
                read, self.input_offsets[node] = group.input_views[node]
            self.input_params[node] = param
            self.tensor_params.append(param)
            self.args.tensors.append(tensor_name(read))
            self.param_source[param] = tensor_name(read)
            self.param_meta[param] = node.meta["val"]
        self.out_buffers: list[tuple[fx.Node, str]] = []
        for node in group.outputs:
            for copy in range(group.output_copies.get(node, 1)):
                buffer = tensor_name(node) if copy == 0 else f"{tensor_name(node)}__copy{copy}"
                self.out_buffers.append((node, buffer))
                self.tensor_params.append(f"out_ptr{len(self.out_buffers) - 1}")
                self.args.tensors.append(buffer)
                self.param_source[f"out_ptr{len(self.out_buffers) - 1}"] = buffer
                self.param_meta[f"out_ptr{len(self.out_buffers) - 1}"] = node.meta["val"]
        self.int64 = self._needs_int64()

    # -- arguments ----------------------------------------------------------------------------

    def int_arg(self, key: Any) -> str:
        if key not in self.int_keys:
            name = f"ks{len(self.int_keys)}"
            self.int_keys[key] = name
            self.int_params.append(name)
            self.args.ints.append(key)
        return self.int_keys[key]

    def size(self, d: int) -> str:
        return self.size_text(self.space[d])

    def size_text(self, size: Any) -> str:
        """A size (or a sum of sizes and offsets) in the kernel: its digits when static, else an
        int argument the wrapper computes from the graph inputs on each call."""
        value = static_int(size)
        return str(value) if value is not None else self.int_arg(("size", hashable_size(size)))

    def size_scalar(self, size: torch.SymInt) -> SizeScalar:
        """A symbolic int operand. Adding it to an int64 zero makes a tensor of it whatever Triton
        made of the argument: an int32 or int64 scalar, or a constexpr where it was 1."""
        return SizeScalar(f"(tl.zeros([], tl.int64) + {self.size_text(size)})", torch.int64,
                          positive=provably(size >= 1))

    def _needs_int64(self) -> bool:
        tensors = [n.meta["val"] for n in list(self.group.inputs) + list(self.group.outputs)]
        sizes = [math.prod([1] + list(self.space))]
        for meta in tensors:
            sizes.append(meta.storage_offset() + sum((s - 1) * abs(st) for s, st in zip(meta.shape, meta.stride())) + 1)
        for size in sizes:
            value = static_int(size)
            if value is None or value > _INT32_LIMIT:
                return True
        return False

    # -- scopes -------------------------------------------------------------------------------

    def _lines(self) -> list[str]:
        return self.loop if self.loop is not None else self.outer

    def _cache(self, full: bool) -> dict[Any, tuple[str, bool]]:
        if full and not self.persistent and self.loop is not None:
            return self.full_cache
        return self.row_cache

    def _tmp(self, expr: str, full: bool) -> str:
        self.counter += 1
        var = f"tmp{self.counter}"
        target = self.loop if (full and self.loop is not None) else self.outer
        target.append(f"{var} = {expr}")
        return var

    def _is_full(self, node: fx.Node) -> bool:
        return any(m in self.r_dims for m in self.group.dim_maps[node] if m is not None)

    # -- values -------------------------------------------------------------------------------

    def load(self, node: fx.Node, dim_map: tuple) -> tuple[str, bool]:
        if node in self.host_scalars:  # Triton types a Python float argument float32
            return f"(tl.zeros([], tl.float32) + {self.input_params[node]})", True
        meta = node.meta["val"]
        access = Access(self, self.input_params[node], meta, dim_map)
        offset, uses_x, uses_r = access.offset()
        full = uses_r
        cache = self._cache(full)
        key = ("load", node, dim_map)
        if key in cache:
            return cache[key]
        if self.input_offsets.get(node):
            offset = f"{self.input_offsets[node]} + {offset}"
        self.load_log.append((node, offset, len(self.store_offsets)))
        if not uses_x and not uses_r:
            expr = f"tl.load({self.input_params[node]} + {offset})"
            constant = True
        else:
            mask = " & ".join(m for m, used in (("xmask", uses_x), ("rmask", uses_r)) if used)
            expr = f"tl.load({self.input_params[node]} + ({offset}), {mask}, other=0)"
            constant = False
        if compute_dtype(meta.dtype) != meta.dtype:
            expr += ".to(tl.float32)"
        if full and not self.persistent and self.loop is None:
            raise AssertionError("full-level load outside a loop")
        var = self._tmp(expr, full)
        cache[key] = (var, constant)
        return var, constant

    def value(self, node: fx.Node) -> tuple[str, bool]:
        """(variable, is_constant) of a member node at the current scope's indices."""
        full = self._is_full(node)
        cache = self._cache(full)
        if node in cache:
            return cache[node]
        if node.target in op_table.REDUCTIONS:
            result = (self.reduction(node), False)
            self.row_cache[node] = result
            return result
        if node.target in op_table.VIEWS:
            result = self.value(node.args[0])
            cache[node] = result
            return result
        if node.target in SHIFTED_LOADS:
            result = (self.shifted_value(node, full), False)
            cache[node] = result
            return result
        if node.target in op_table.IOTA:
            start, step = op_table.iota_arguments(node.target, node.args)
            offset, _, _ = Access(self, "", UnitStride(), self.group.dim_maps[node]).offset()
            var = self._tmp(op_table.iota(offset, start, step, node.meta["val"].dtype), full)
            cache[node] = (var, False)
            return var, False
        if node.target in op_table.RANDOM_UNIFORM:
            meta = node.meta["val"]
            layout = torch.empty(tuple(meta.shape), device="meta")  # the linear index is the Philox offset
            offset, _, _ = Access(self, "", layout, self.group.dim_maps[node]).offset()
            seed = self.int_arg(("seed", node.name))
            var = self._tmp(op_table.uniform(seed, f"({offset})", meta.dtype), full)
            cache[node] = (var, False)
            return var, False
        constant = True

        def operand(arg: Any) -> Any:
            nonlocal constant
            if isinstance(arg, fx.Node) and isinstance(arg.meta["val"], torch.SymInt):
                return self.size_scalar(arg.meta["val"])
            if isinstance(arg, fx.Node):
                meta = arg.meta["val"]
                if arg in self.members:
                    var, is_constant = self.value(arg)
                else:
                    dim_map = broadcast_map(tuple(meta.shape), tuple(node.meta["val"].shape), self.group.dim_maps[node])
                    var, is_constant = self.load(arg, dim_map)
                constant = constant and is_constant
                return Operand(var, meta.dtype, zero_dim=meta.dim() == 0)
            if isinstance(arg, (list, tuple)):
                return type(arg)(operand(a) for a in arg)
            return arg

        args = [operand(a) for a in node.args]
        kwargs = {k: operand(v) for k, v in node.kwargs.items()}
        expr = op_table.POINTWISE[node.target].emit(*args, **kwargs)
        if constant:  # only Python scalars: make it a tensor before any .to()
            expr = f"tl.full([], 0, {triton_type(compute_dtype(node.meta['val'].dtype))}) + ({expr})"
        expr = round_to(expr, node.meta["val"].dtype)
        var = self._tmp(expr, full)
        cache[node] = (var, constant)
        return var, constant

    # -- reductions ---------------------------------------------------------------------------

    def _loop_header(self) -> list[str]:
        if self.split:
            return [
                "for roffset in range(r_begin, r_end, RBLOCK):",
                "    rindex = roffset + tl.arange(0, RBLOCK)[None, :]",
                "    rmask = rindex < r_end",
                "    #R_DIMS#",
            ]
        return [
            f"for roffset in range(0, {self.rnumel_name}, RBLOCK):",
            "    rindex = roffset + tl.arange(0, RBLOCK)[None, :]",
            f"    rmask = rindex < {self.rnumel_name}",
            "    #R_DIMS#",
        ]

    # -- stores -------------------------------------------------------------------------------

    def store_offset(self, offset: str, uses_x: bool, dim_map: tuple) -> str:
        """A store's pointer must have the mask's shape (Triton broadcasts a load's pointer, not
        a store's)."""
        return offset if uses_x else f"{offset} + 0 * xindex"

    def tile_shape(self, uses_r: bool) -> str:
        """The shape of a stored value at the current scope (a constant is broadcast to it)."""
        return "[XBLOCK, RBLOCK]" if uses_r else ("[XBLOCK, 1]" if self.is_reduction else "[XBLOCK]")

    def store(self, node: fx.Node, buffer_index: int) -> None:
        meta = node.meta["val"]
        dim_map = self.group.dim_maps[node]
        access = Access(self, f"out_ptr{buffer_index}", meta, dim_map)
        # every copy of a value returned several times is laid out alike
        offset, uses_x, uses_r = access.offset()
        partial = node in self.split_sources
        var, constant = self.value(self.split_sources[node][0] if partial else node)
        shape = self.tile_shape(uses_r)
        if constant or (self.is_reduction and not uses_r and not uses_x):
            var = f"({var} + tl.zeros({shape}, {triton_type(compute_dtype(meta.dtype))}))"
        mask = "xmask & rmask" if uses_r else "xmask"
        offset = self.store_offset(offset, uses_x, dim_map)
        covered = {m for m in dim_map if m is not None}
        broadcast = [d for d in self.x_nonunit if d not in covered]
        for d in broadcast:  # broadcast along d: the element is written once, at index 0
            mask += f" & (x{d} == 0)"
            self.used_dims.add(("x", d))
        if faults.active("wrong_result", self.name):
            var = _wrong_value(var, meta.dtype)
        if partial:  # float32 partial results, one row of xnumel per split
            var = f"({var}).to(tl.float32)"  # an any / all is a bool
            self._lines().append(f"tl.store(out_ptr{buffer_index} + split_offset + ({offset}), {var}, {mask})")
            return
        value = to_storage(var, meta.dtype)
        self._lines().append(f"tl.store(out_ptr{buffer_index} + ({offset}), {value}, {mask})")
        # In place only where each element is read and written by one program: not an output
        # broadcast along a dim of the space (its offset is read by every program along that dim,
        # and the one at index 0 overwrites it: ResNet-50's fused batch norm backward wrote a
        # scale over the variance sum the other programs still read, conv weight gradients 50x
        # off), nor one repeated along a reduced dim (each loop step would read the last one's
        # store), nor a row-level output of a split kernel (every split reads and writes the same
        # rows: the same backward's scale over its variance input, caught on the CPU).
        if uses_r:
            one_writer = not broadcast and all(d in covered for d in self.r_nonunit)
        else:
            one_writer = not broadcast and not self.split
        self.store_offsets[buffer_index] = offset if one_writer else None

    # -- driver -------------------------------------------------------------------------------

    def body(self) -> list[str]:
        full_outputs = [(i, n) for i, (n, _) in enumerate(self.out_buffers) if self._is_full(n)]
        row_outputs = [(i, n) for i, (n, _) in enumerate(self.out_buffers) if not self._is_full(n)]
        if self.persistent:
            for index, node in full_outputs + row_outputs:
                self.store(node, index)
            return self.outer
        if self.split:
            rsplit = self.int_arg(("rsplit",))
            self.outer.append(f"r_begin = tl.program_id(1) * {rsplit}")
            self.outer.append(f"r_end = tl.minimum(r_begin + {rsplit}, {self.rnumel_name})")
            self.outer.append("split_offset = tl.program_id(1).to(tl.int64) * xnumel")
        reductions = [n for n in self.group.nodes if n.target in op_table.REDUCTIONS]
        self.early_stores = [(i, n) for i, n in full_outputs if not reads_reduction(n, self.members, reductions)]
        for index, node in row_outputs:
            self.value(node)  # runs the reduction loops this output needs (and the early stores)
        if self.early_stored:
            full_outputs = [(i, n) for i, n in full_outputs if (i, n) not in self.early_stores]
        if full_outputs:
            self.loop, self.full_cache = [], {}
            for index, node in full_outputs:
                self.store(node, index)
            body = self.loop
            self.loop = None
            self.outer.extend(self._loop_header())
            self.outer.extend("    " + line for line in body)
        for index, node in row_outputs:
            self.store(node, index)
        return self.outer

    def index_lines(self, level: str) -> list[str]:
        """Per-dim indices x<d> (level "x") or r<d> (level "r") the body uses."""
        dims = self.x_dims if level == "x" else self.r_dims
        flat = "xindex" if level == "x" else "rindex"
        lines = []
        for position, d in enumerate(dims):
            if (level, d) not in self.used_dims:
                continue
            later = [e for e in dims[position + 1:] if not is_one(self.space[e])]
            expr = flat
            if later:
                expr = f"({flat} // ({' * '.join(self.size(e) for e in later)}))"
            earlier = [e for e in dims[:position] if not is_one(self.space[e])]
            if earlier and not is_one(self.space[d]):
                expr = f"{expr} % {self.size(d)}"
            if is_one(self.space[d]):
                expr = "0"
            lines.append(f"{level}{d} = {expr}")
        return lines


def _wrong_value(var: str, dtype: torch.dtype) -> str:
    """A value that is off, for the ``wrong_result`` fault (``ait_dynamo/faults.py``)."""
    if dtype == torch.bool:
        return f"(({var}) == 0)"
    if dtype.is_floating_point:
        return f"(({var}) * 1.5 + 1.0)"
    return f"(({var}) + 1)"


def _contiguous(space: list[Any], dims: list[int]) -> dict[int, Any]:
    strides: dict[int, Any] = {}
    running: Any = 1
    for d in reversed(dims):
        strides[d] = running
        running = times(space[d], running) if not is_one(space[d]) else running
    return strides


def generate_kernel(group: FusionGroup, tensor_name: Callable[[fx.Node], str]) -> GeneratedKernel:
    from ait_dynamo.kernels.wrapper import render_template

    if group.kind == "gemm":
        from ait_dynamo.kernels.codegen_gemm import generate_gemm_kernel

        return generate_gemm_kernel(group, tensor_name)
    if group.kind == "conv":
        from ait_dynamo.kernels.codegen_conv import generate_conv_kernel

        return generate_conv_kernel(group, tensor_name)

    name = group.name
    kernel = KernelWriter(group, name, tensor_name)
    body = kernel.body()
    if faults.active("compile", name):
        body = ['tl.static_assert(False, "ait_dynamo: injected compile failure")'] + body
    x_index = kernel.index_lines("x")
    r_index = kernel.index_lines("r")
    if not kernel.persistent:
        body = [line.replace("#R_DIMS#", "; ".join(r_index) or "pass") for line in body]
    xnumel_factors = _numel_factors([group.space[d] for d in kernel.x_dims])
    rnumel_factors = _numel_factors([group.space[d] for d in kernel.r_dims])
    template = "reduction.py.jinja" if kernel.is_reduction else "pointwise.py.jinja"
    source = render_template(
        template,
        name=name,
        tensor_params=kernel.tensor_params,
        int_params=kernel.int_params,
        int64=kernel.int64,
        persistent=kernel.persistent,
        x_index=x_index,
        r_index=r_index,
        body=body,
        ops=", ".join(str(n.target) for n in group.nodes),
    )
    moved = _bytes_moved(group)
    return GeneratedKernel(
        name=name,
        source=source,
        kind="reduction" if kernel.is_reduction else "pointwise",
        persistent=kernel.persistent,
        column=kernel.column,
        split=kernel.split,
        split_casts={b: (kernel.split_sources[n][0].meta["val"].dtype,) + kernel.split_sources[n][1]
                     for n, b in kernel.out_buffers if n in kernel.split_sources},
        split_kinds={b: op_table.REDUCTIONS[kernel.split_sources[n][0].target]
                     for n, b in kernel.out_buffers if n in kernel.split_sources},
        args=kernel.args,
        xnumel=xnumel_factors,
        rnumel=rnumel_factors,
        out_buffers=kernel.out_buffers,
        inplace_candidates={} if group.output_copies else inplace_candidates(
            group, kernel.load_log, kernel.store_offsets, kernel.out_buffers),
        device_type=group.outputs[0].meta["val"].device.type,
        warmup=_warmup_args(kernel, xnumel_factors, rnumel_factors),
        bytes_moved=moved,
    )


def _warmup_args(kernel: KernelWriter, xnumel: list[Any], rnumel: list[Any]) -> tuple | None:
    from ait_dynamo.kernels import runtime

    partial_params = {f"out_ptr{i}" for i, (node, _) in enumerate(kernel.out_buffers) if node in kernel.split_sources}
    dtypes = tuple(
        torch.float32 if p in partial_params else kernel.param_meta[p].dtype
        for p in kernel.tensor_params
    )
    numels: list[int] = []
    for factors in (xnumel, rnumel) if kernel.is_reduction else (xnumel,):
        total = 1
        for factor in factors:
            value = static_int(factor)
            if value is None:
                return None
            total *= value
        numels.append(total)
    ints: list[int | float] = []
    source_to_param = {v: k for k, v in kernel.param_source.items()}
    for key in kernel.args.ints:
        if key[0] == "size":
            value = static_int(key[1])
        elif key[0] in STAND_IN_SCALARS:
            value = STAND_IN_SCALARS[key[0]]
        elif key[0] == "rsplit":
            value = runtime.reduction_split(numels[0], numels[1], kernel.column)[0]
        else:
            value = static_int(kernel.param_meta[source_to_param[key[1]]].stride()[key[2]])
        if value is None:
            return None
        ints.append(value)
    return dtypes, tuple(ints + numels)


def _bytes_moved(group: FusionGroup) -> int | None:
    total = 0
    for node in list(group.inputs) + [n for n in group.outputs for _ in range(group.output_copies.get(n, 1))]:
        meta = node.meta["val"]
        numel = static_int(meta.numel())
        if numel is None:
            return None
        total += numel * meta.element_size()
    return total
