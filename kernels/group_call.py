"""Wrapper source for one fusion group: allocate its outputs, launch its kernel where Triton runs
(CUDA, or CPU under ``TRITON_INTERPRET=1``), else run the group's nodes as ATen calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo import faults
from ait_dynamo.kernels.codegen import GeneratedKernel
from ait_dynamo.kernels.source import call_source, value_source
from ait_dynamo.passes.graph_utils import has_static_layout
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.sizes import free_symbols, size_source, symbol_sources

_INDENT = " " * 8  # the call body's indentation in wrapper.py.jinja


class SymbolLocals:
    """Symbolic sizes read once at entry into locals (``sym_s0 = primals_1.size(0)``), before the
    boxed inputs are freed."""

    def __init__(self, placeholders: list[fx.Node], names: Callable[[fx.Node], str]):
        self.sources = symbol_sources(placeholders, names)
        self.used: dict[Any, str] = {}
        self.names = names

    def local(self, symbol: Any) -> str:
        if symbol not in self.used:
            name = f"sym_{symbol}"
            getattr(self.names, "taken", set()).add(name)
            self.used[symbol] = name
        return self.used[symbol]

    def source(self, size: Any) -> str:
        for symbol in free_symbols(size):
            self.local(symbol)
        return size_source(size, self.used)

    def tuple_source(self, sizes: Any) -> str:
        """A tuple of sizes as source: ``(2, sym_s0, (sym_s0 * 3))``."""
        return value_source(tuple(self.source(s) for s in sizes), lambda n: n).replace("'", "")

    def lines(self) -> list[str]:
        return [f"{name} = {self.sources[symbol]}" for symbol, name in sorted(self.used.items(), key=lambda i: i[1])]


def _product(factors: list[Any], symbols: SymbolLocals) -> str:
    if not factors:
        return "1"
    if all(isinstance(f, int) for f in factors):
        product = 1
        for f in factors:
            product *= f
        return str(product)
    return " * ".join(symbols.source(f) for f in factors)


@dataclass
class GroupCall:
    """The wrapper source of one fusion group: ``setup`` runs once in ``make_call`` (the launch
    site), ``allocate`` and ``launch`` each call, ``recover`` in the ``except`` that runs ATen
    instead when the kernel fails or was retired (``kernels/launch_site.py``)."""

    group: str
    setup: list[str] = field(default_factory=list)
    allocate: list[str] = field(default_factory=list)
    launch: list[str] = field(default_factory=list)
    recover: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)  # output copies, after ATen's values
    outputs: str = ""
    inputs: str = ""
    taken: list[str] = field(default_factory=list)  # dead buffers the outputs took (kernels/slots.py)

    def source(self) -> str:
        """The steady-state body: allocations, then one launch in a ``try``; where Triton does
        not run, the ATen calls alone."""
        if not self.launch:
            return ("\n" + _INDENT).join(self.recover + self.copies)
        return ("\n" + _INDENT).join(self._guarded())

    def verified_source(self) -> str:
        """The first, verified call (``ait_dynamo/verify.py``): ATen's reference before the
        kernel (which may overwrite a dying input), the check after."""
        reference = f"reference_{self.group}"
        lines = [f"{reference} = verifier.reference({self.group!r}, {self.group}_aten, ({self.inputs}))"]
        lines += self._guarded()
        lines += ["else:", f"    {self.outputs}= verifier.check({self.group}_site, {self.group!r}, {reference}, ({self.outputs}))"]
        lines += _indent(self.copies) + [f"del {reference}"]
        return ("\n" + _INDENT).join(lines)

    def _guarded(self) -> list[str]:
        lines = self.allocate + ["try:"] + _indent(self.launch)
        lines += ["except Exception as error:  # noqa: BLE001 - failed, or retired: ATen runs the group"]
        return lines + _indent(self.recover + self.copies)


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


class PartialSums:
    """The float32 partial-sum buffers of split reductions (static sizes), shared along the
    wrapper: a group's partial sums are dead once its finishing kernel has added them up (one
    stream orders the launches), so a later split of the same sizes, kind and device writes into
    the same buffer where it would allocate one. GPT-2's training backward allocated
    98 of them a step for a handful of shapes; a ``torch.empty_strided`` took 1.9-3.8 µs of host
    time on the H200 machine (``benchmarks/results/nvidia-h200/host_calls/``). Two partial sums of one group
    are live together: the n-th of a shape in a group takes the n-th buffer of that shape."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, ...], list[str]] = {}

    def buffer_for(self, key: tuple[str, ...], position: int, name: str) -> str | None:
        """The buffer an earlier group allocated for the ``position``-th partial sum of ``key``, or
        ``None``: then ``name`` is allocated, and later groups may take it."""
        buffers = self._buffers.setdefault(key, [])
        if position < len(buffers):
            return buffers[position]
        buffers.append(name)
        return None


def group_call_source(group: FusionGroup, kernel: GeneratedKernel, names: Callable[[fx.Node], str],
                      symbols: SymbolLocals, autotune: bool = False,
                      reuse: dict[str, tuple[str, bool]] | None = None, triton_runs: bool = True,
                      take_slot: Callable[[fx.Node], str | None] | None = None,
                      finishing: GeneratedKernel | None = None, partials: PartialSums | None = None,
                      cuda_allocator: tuple[str, int] | None = None) -> GroupCall:
    """``reuse``: output buffer → (the name of a dying input whose buffer it is written into,
    whether that input has another shape: a contiguous base read through a view).
    ``triton_runs``: whether Triton runs on the group's device in this process (decided once, at
    compile time); where it does not, the group is its ATen calls and nothing else.
    ``take_slot(node)``: the name of a dead buffer of the node's exact layout its fresh output
    buffer may take instead of an allocation (``kernels/slots.py``), or ``None``.
    ``finishing``: a split reduction's second kernel, which adds up its partial sums
    (``kernels/split_sum.py``). ``partials``: the wrapper's shared partial-sum buffers.
    ``cuda_allocator``: (the wrapper's local ``(size, stride, dtype) -> tensor``, the CUDA device
    index it allocates on) for buffers on that device (:func:`runtime.cuda_allocators`)."""
    reuse = reuse or {}
    inputs = ", ".join(names(n) for n in group.reads())
    outputs = "".join(f"{names(n)}, " for n in group.outputs)
    call = GroupCall(group.name, outputs=outputs, inputs=f"{inputs}, " if inputs else "")
    call.copies = [f"{buffer} = {names(node)}.clone()" for node, buffer in kernel.out_buffers if buffer != names(node)]
    call.recover = [f"{outputs}= {group.name}_site.recover(error, {inputs})"]
    if not triton_runs:
        call.recover = [f"{outputs}= {group.name}_aten({inputs})"]
        return call
    tensors_read = [names(n) for n in group.reads() if isinstance(n.meta.get("val"), torch.Tensor)]
    static = all(isinstance(f, int) for f in [*kernel.xnumel, *(kernel.rnumel if kernel.kind == "reduction" else [])])
    xnumel = _product(kernel.xnumel, symbols)
    rnumel = _product(kernel.rnumel, symbols) if kernel.kind == "reduction" else "1"
    split = f"split_{kernel.name}"
    if kernel.split and finishing is None:
        raise ValueError(f"{kernel.name} splits its rows: its partial sums need their finishing kernel")
    if kernel.split:  # static sizes: the split is decided once, with the site
        (call.setup if static else call.allocate).append(f"r{split}, {split} = _rt.reduction_split({xnumel}, {rnumel}, {kernel.column})")
    fresh: set[str] = set()  # buffers allocated here: aligned, whatever the call
    partials_of_shape: dict[tuple[str, ...], int] = {}

    def allocation(meta: torch.Tensor, shape: str, stride: str, dtype: torch.dtype) -> str:
        if cuda_allocator is not None and meta.device.type == "cuda" and meta.device.index == cuda_allocator[1]:
            return f"{cuda_allocator[0]}({shape}, {stride}, {dtype})"
        device = f"{tensors_read[0]}.device" if tensors_read else value_source(meta.device, names)
        return f"torch.empty_strided({shape}, {stride}, dtype={dtype}, device={device})"

    for node, buffer in kernel.out_buffers:
        meta = node.meta["val"]
        if buffer in kernel.split_casts:  # float32 partial sums; the buffer itself is the finishing kernel's
            partial = f"{buffer}__partial"
            # the split count is a function of these (runtime.reduction_split); static sizes only,
            # where it is computed once
            shape_key = (xnumel, rnumel, str(kernel.column), str(meta.device))
            position = partials_of_shape.get(shape_key, 0)
            partials_of_shape[shape_key] = position + 1
            shared = partials.buffer_for(shape_key, position, partial) if partials is not None and static else None
            if shared is not None:
                call.allocate.append(f"{partial} = {shared}")
            else:
                call.allocate.append(f"{partial} = {allocation(meta, f'({split}, {xnumel})', f'({xnumel}, 1)', torch.float32)}")
            fresh.add(partial)
        shape = symbols.tuple_source(meta.shape)
        if buffer in reuse:  # same elements, strides and dtype; each is read before it is written
            source, reshaped = reuse[buffer]
            if not reshaped:
                call.allocate.append(f"{buffer} = {source}")
            elif has_static_layout(meta):  # a dense buffer from its start (kernels/reuse.py): kernels/views.py
                call.allocate.append(f"{buffer} = _reinterpret({source}, {tuple(meta.shape)!r}, {tuple(meta.stride())!r}, 0)")
            else:
                call.allocate.append(f"{buffer} = {source}.view({shape})")
            continue
        slot = take_slot(node) if take_slot is not None else None
        if slot is not None:  # a dead buffer of this exact layout, allocated at offset 0
            call.allocate.append(f"{buffer} = {slot}")
            call.taken.append(slot)
            fresh.add(buffer)
            continue
        stride = symbols.tuple_source(meta.stride())
        call.allocate.append(f"{buffer} = {allocation(meta, shape, stride, meta.dtype)}")
        fresh.add(buffer)
    ints: list[str] = []
    seeds: list[int] = []
    for key in kernel.args.ints:
        if key[0] == "size":
            ints.append(symbols.source(key[1]))
        elif key[0] == "seed":
            seeds.append(len(kernel.args.tensors) + len(ints))
            ints.append("_rt.next_seed()")
        elif key[0] == "rsplit":
            ints.append(f"r{split}")
        elif key[0] == "item":  # a 0-d CPU tensor's value, read on the host (passes/host_scalars.py)
            ints.append(f"{key[1]}.item()")
        else:
            _, tensor, dim = key
            ints.append(f"{tensor}.stride({dim})")
    tensors = [f"{t}__partial" if t in kernel.split_casts else t for t in kernel.args.tensors]
    checked = tuple(i for i, t in enumerate(tensors) if t not in fresh)
    if not static:  # each call passes its sizes last
        ints += [xnumel] if kernel.kind == "pointwise" else [xnumel, rnumel, split if kernel.split else "1"]
    options = [f"persistent={kernel.persistent}"] if kernel.kind == "reduction" else []
    if static:
        options.append(f"xnumel={xnumel}")
        if kernel.kind == "reduction":
            options.append(f"rnumel={rnumel}")
    if kernel.gemm is not None:
        options.append(f"gemm={kernel.gemm!r}, dtype={kernel.gemm_dtype}")
    if kernel.column:
        options.append("column=True")
    if kernel.split and static:
        options.append(f"splits={split}")
    if autotune:  # keyed by the source without the kernel's name: GEMM tuning measured it under that key
        options.append(f"tune={kernel.tune_key!r}")
    if checked:
        options.append(f"checked={checked}")
    if seeds:
        options.append(f"seeds={tuple(seeds)}")
    values = [n.meta.get("val") for n in group.outputs]
    if all(has_static_layout(v) for v in values):
        options.append(f"layouts={tuple((tuple(v.shape), tuple(v.stride())) for v in values)!r}")
    call.setup.append(f"{group.name}_site = LaunchSite({kernel.name}, {group.name}_aten, {group.name!r}, "
                      f"{kernel.kind!r}, {len(tensors)}, {', '.join(options)})")
    if faults.active("launch", group.name):
        call.launch.append(f"_rt.injected_launch_failure({group.name!r})")
    call.launch.append(f"{group.name}_site.launch({', '.join(tensors + ints)})")
    if finishing is not None:
        site = f"{group.name}_sum_site"
        sizes = "" if static else f", {xnumel}"
        options = f"xnumel={xnumel}" if static else "xnumel=None"
        call.setup.append(f"{site} = LaunchSite({finishing.name}, {group.name}_aten, {group.name + '_sum'!r}, "
                          f"'pointwise', {len(finishing.args.tensors)}, {options})")
        call.launch.append(f"{site}.launch({', '.join(finishing.args.tensors)}, {split}{sizes})")
    return call


def aten_function_source(group: FusionGroup, names: Callable[[fx.Node], str]) -> str:
    """``def <group>_aten(inputs): ...`` running the group's nodes through ATen (CPU without the
    Triton interpreter, or no Triton at all)."""
    lines = [f"def {group.name}_aten({', '.join(names(n) for n in group.reads())}):"]
    done: set[fx.Node] = set()
    for node in group.inputs:  # views the kernel reads in place are rebuilt from their bases
        for view in group.view_chains.get(node, []):
            if view not in done:
                done.add(view)
                lines.append(f"    {names(view)} = {call_source(view, names)[0]}")
    for node in group.nodes:
        lines.append(f"    {names(node)} = {call_source(node, names)[0]}")
    lines.append(f"    return {', '.join(names(n) for n in group.outputs)},")
    return "\n".join(lines)


__all__ = ["SymbolLocals", "GroupCall", "PartialSums", "group_call_source", "aten_function_source", "torch"]
