"""Wrapper source for one fusion group: allocate its outputs, launch its kernel where Triton runs
(CUDA, or CPU under ``TRITON_INTERPRET=1``), else run the group's nodes as ATen calls."""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo import faults
from ait_dynamo.kernels.codegen import GeneratedKernel
from ait_dynamo.kernels.source import call_source, value_source
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


def group_call_source(group: FusionGroup, kernel: GeneratedKernel, names: Callable[[fx.Node], str],
                      symbols: SymbolLocals, autotune: bool = False,
                      reuse: dict[str, tuple[str, bool]] | None = None) -> str:
    """``reuse``: output buffer → (the name of a dying input whose buffer it is written into,
    whether that input has another shape: a contiguous base read through a view)."""
    reuse = reuse or {}
    inputs = [names(n) for n in group.reads()]
    tensors_read = [names(n) for n in group.reads() if isinstance(n.meta.get("val"), torch.Tensor)]
    device_type = group.outputs[0].meta["val"].device.type
    header = [f"# {group.name}: {group.kind}, {len(group.nodes)} ops"]
    launched = f"launched_{group.name}"
    header.append(f"{launched} = False")
    header.append(f"if _TRITON_ON.get({device_type!r}, False) and {kernel.name} not in _rt.BROKEN:")
    header.append("    try:")
    lines: list[str] = []
    xnumel = _product(kernel.xnumel, symbols)
    rnumel = _product(kernel.rnumel, symbols) if kernel.kind == "reduction" else "1"
    split = f"split_{kernel.name}"
    if kernel.split:
        lines.append(f"    r{split}, {split} = _rt.column_split({xnumel}, {rnumel})")
    for node, buffer in kernel.out_buffers:
        meta = node.meta["val"]
        if kernel.split:
            device = f"{tensors_read[0]}.device" if tensors_read else value_source(meta.device, names)
            lines.append(
                f"    {buffer}__partial = torch.empty(({split}, {xnumel}), dtype=torch.float32, device={device})"
            )
            continue
        shape = value_source(tuple(symbols.source(s) for s in meta.shape), lambda n: n).replace("'", "")
        if buffer in reuse:  # same elements, strides and dtype; each is read before it is written
            source, reshaped = reuse[buffer]
            lines.append(f"    {buffer} = {source}.view({shape})" if reshaped else f"    {buffer} = {source}")
            continue
        stride = value_source(tuple(symbols.source(s) for s in meta.stride()), lambda n: n).replace("'", "")
        device = f"{tensors_read[0]}.device" if tensors_read else value_source(meta.device, names)
        lines.append(
            f"    {buffer} = torch.empty_strided({shape}, {stride}, dtype={meta.dtype}, device={device})"
        )
    ints = []
    for key in kernel.args.ints:
        if key[0] == "size":
            ints.append(symbols.source(key[1]))
        elif key[0] == "seed":
            ints.append("_rt.next_seed()")
        elif key[0] == "rsplit":
            ints.append(f"r{split}")
        else:
            _, tensor, dim = key
            ints.append(f"{tensor}.stride({dim})")
    buffers = {buffer for _, buffer in kernel.out_buffers}
    tensors = ", ".join(f"{t}__partial" if kernel.split and t in buffers else t for t in kernel.args.tensors)
    int_args = ", ".join(ints)
    tune = f", tune={hashlib.sha256(kernel.source.encode()).hexdigest()[:20]!r}" if autotune else ""
    if faults.active("launch", group.name):
        lines.append(f"    _rt.injected_launch_failure({group.name!r})")
    if kernel.kind == "pointwise":
        lines.append(
            f"    _rt.launch_pointwise({kernel.name}, ({tensors},), ({int_args}{',' if ints else ''}), {xnumel}{tune})"
        )
    else:
        lines.append(
            f"    _rt.launch_reduction({kernel.name}, ({tensors},), ({int_args}{',' if ints else ''}), "
            f"{xnumel}, {rnumel}, {kernel.persistent}{', column=True' if kernel.column else ''}"
            f"{f', splits={split}' if kernel.split else ''}{tune})"
        )
    if kernel.split:
        for node, buffer in kernel.out_buffers:
            meta = node.meta["val"]
            shape = value_source(tuple(symbols.source(s) for s in meta.shape), lambda n: n).replace("'", "")
            chain = list(kernel.split_casts.get(buffer, ())) or [meta.dtype]
            while chain and chain[0] == torch.float32:  # the partial sums are float32 already
                chain.pop(0)
            casts = "".join(f".to({dtype})" for dtype in chain)
            lines.append(f"    {buffer} = {buffer}__partial.sum(0){casts}.reshape({shape})")
    lines.append(f"    {launched} = True")
    # a kernel that fails to compile or launch is reported once, then its ops run through ATen
    lines = header + ["    " + line for line in lines]
    lines.append("    except Exception as error:  # noqa: BLE001")
    lines.append(f"        _rt.mark_broken({kernel.name}, error)")
    lines.append(f"if not {launched}:")
    outputs = [names(n) for n in group.outputs]
    lines.append(f"    {', '.join(outputs)}, = {group.name}_aten({', '.join(inputs)})")
    for node, buffer in kernel.out_buffers:
        if buffer != names(node):
            lines.append(f"    {buffer} = {names(node)}.clone()")
    return ("\n" + _INDENT).join(lines)


def verified_group_source(group: FusionGroup, kernel: GeneratedKernel, names: Callable[[fx.Node], str],
                          call: str) -> str:
    """The group's ``call`` wrapped for the first, verified call (``ait_dynamo/verify.py``):
    ATen's reference before the kernel (which may overwrite a dying input), the check after."""
    reference = f"reference_{group.name}"
    inputs = "".join(f"{names(n)}, " for n in group.reads())
    outputs = "".join(f"{names(n)}, " for n in group.outputs)
    lines = [f"{reference} = verifier.reference({group.name!r}, {group.name}_aten, ({inputs}))", call,
             f"if launched_{group.name}:",
             f"    {outputs}= verifier.check({kernel.name}, {group.name!r}, {reference}, ({outputs}))"]
    for node, buffer in kernel.out_buffers:
        if buffer != names(node):
            lines.append(f"    {buffer} = {names(node)}.clone()")
    lines.append(f"del {reference}")
    return ("\n" + _INDENT).join(lines)


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


__all__ = ["SymbolLocals", "group_call_source", "verified_group_source", "aten_function_source", "torch"]
