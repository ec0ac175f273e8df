"""Values a kernel loads at shifted, masked indices (``passes/fusion_shifted.py`` plans them):
``cat`` (each input over its slice of the cat dim), ``slice_backward`` (the gradient over its
slice, zero elsewhere), ``constant_pad_nd`` (the input where it lies, the fill elsewhere) and
``max_pool2d`` (the maximum of one masked load per window tap). The planner keeps their inputs out
of their group, so each is a kernel input."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo.kernels.codegen_access import Access, scaled_index
from ait_dynamo.kernels.triton_values import compute_dtype, literal
from ait_dynamo.passes.fusion_maps import cat_dim, pad_amounts, pool_window, slice_backward_span
from ait_dynamo.passes.sizes import provably, same_size, static_int

aten = torch.ops.aten


class ShiftedLoadWriter:
    """Needs from the host class: group, r_dims, used_dims, input_params, input_offsets,
    load_log, store_offsets, _tmp(), size_text().

    Sizes may be symbolic (dynamic shapes): every bound, shift and slice end is written through
    ``size_text`` (digits, or an int argument the wrapper computes), and a bound is left out only
    where it provably holds for every size (``passes/sizes.provably``, which adds no guard)."""

    group: Any
    r_dims: list[int]
    used_dims: set
    input_params: dict
    input_offsets: dict
    load_log: list
    store_offsets: dict
    _tmp: Callable[[str, bool], str]
    size_text: Callable[[Any], str]

    def shifted_value(self, node: fx.Node, full: bool) -> str:
        emit = {aten.cat.default: self._cat, aten.slice_backward.default: self._slice_backward,
                aten.constant_pad_nd.default: self._constant_pad, aten.max_pool2d.default: self._max_pool}[node.target]
        return emit(node, full)

    def _cat(self, node: fx.Node, full: bool) -> str:
        """``cat`` along dim d: each input loaded (masked) where the iteration index along d falls
        in its slice, at that index minus the slice's start; one ``tl.where`` picks the value.
        The planner keeps cat's inputs out of its group, so each is a kernel input."""
        dim = cat_dim(node)
        pieces, start = [], 0
        for item in node.args[0]:
            end = start + item.meta["val"].shape[dim]
            pieces.append((start, end, item))
            start = end
        return self._pieces(node, dim, pieces, full)

    def _slice_backward(self, node: fx.Node, full: bool) -> str:
        """``slice_backward``: the gradient loaded over its slice, zero elsewhere."""
        dim, start, end = slice_backward_span(node)
        return self._pieces(node, dim, [(start, end, node.args[0])], full)

    def _constant_pad(self, node: fx.Node, full: bool) -> str:
        """``constant_pad_nd``: the input loaded at each index minus the padding before it, masked
        to where it lies; the fill value elsewhere (a fill of 0 is the masked load's own). A
        negative amount crops: the shift runs the other way and needs no bound."""
        source = node.args[0]
        size_of = source.meta["val"].shape
        amounts = pad_amounts(node)
        bounds = []
        for k, iteration_dim in enumerate(self.group.dim_maps[node]):
            if iteration_dim is None or k not in amounts:  # a size-1 result dim: its one index is 0
                continue
            index = self._index_of(iteration_dim)
            before, after = amounts[k]
            if before > 0:
                bounds.append(f"({index} >= {before})")
            if after > 0:
                bounds.append(f"({index} < {self.size_text(before + size_of[k])})")
        loaded = self._shifted_load(node, source, {k: before for k, (before, _) in amounts.items()}, bounds, full)
        fill = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
        if not bounds or (fill == 0 and math.copysign(1.0, fill) > 0):
            return loaded  # the masked load's other=0 is the fill
        return self._tmp(f"tl.where({' & '.join(bounds)}, {loaded}, {literal(fill, node.meta['val'].dtype)})", full)

    def _max_pool(self, node: fx.Node, full: bool) -> str:
        """``max_pool2d``: the maximum over the window's taps, each the input loaded at
        ``index * stride - padding + tap * dilation`` along the last two dims, masked to where it
        lies (-inf elsewhere, which padding means). NaN propagates, as in ATen's kernel."""
        source = node.args[0]
        window = pool_window(node)
        source_meta, out_shape = source.meta["val"], node.meta["val"].shape
        access = Access(self, self.input_params[source], source_meta, self.group.dim_maps[node])
        rank = len(out_shape)
        levels: set[str] = set()
        leading: list[str] = []
        for k in range(rank - 2):
            term = self._pool_term(access, k, None, levels)
            if term is not None:
                leading.append(term)
        # per spatial dim: (offset term, bounds) of each tap that can lie inside the input
        taps: list[list[tuple[str | None, list[str]]]] = []
        for j, k in enumerate((rank - 2, rank - 1)):
            along = []
            size = source_meta.shape[k]
            for tap in range(window.kernel[j]):
                shift = tap * window.dilation[j] - window.padding[j]
                last = (out_shape[k] - 1) * window.stride[j] + shift  # position of the last window's tap
                if provably(last < 0) or provably(size <= shift):
                    continue  # outside the input for every window
                position = self._pool_position(self.group.dim_maps[node][k], window.stride[j], shift, levels)
                bounds = ([f"({position} >= 0)"] if shift < 0 else []) + (
                    [] if provably(last < size) else [f"({position} < {self.size_text(size)})"])
                along.append((self._pool_term(access, k, position, levels), bounds))
            taps.append(along)
        result = None
        for h_term, h_bounds in taps[0]:
            for w_term, w_bounds in taps[1]:
                terms = [t for t in leading + [h_term, w_term] if t is not None]
                offset = " + ".join(terms) or "0"
                if self.input_offsets.get(source):
                    offset = f"{self.input_offsets[source]} + {offset}"
                mask = " & ".join([f"{level}mask" for level in sorted(levels)] + h_bounds + w_bounds)
                self.load_log.append((source, f"shifted:{offset}", len(self.store_offsets)))
                # -inf where padding is read; lanes past the end get 0 from an unpadded tap, which
                # keeps the interpreter's math on them finite (nothing stores them)
                fill = "float('-inf')" if h_bounds or w_bounds else "0"
                expr = f"tl.load({self.input_params[source]} + ({offset}), {mask or 'None'}, other={fill})"
                if compute_dtype(source_meta.dtype) != source_meta.dtype:
                    expr += ".to(tl.float32)"
                loaded = self._tmp(expr, full)
                result = loaded if result is None else self._tmp(
                    f"tl.maximum({result}, {loaded}, propagate_nan=tl.PropagateNan.ALL)", full)
        assert result is not None, "ATen gives every window a tap inside the input"
        return result

    def _pool_position(self, iteration_dim: int | None, stride: int, shift: int, levels: set[str]) -> str:
        """The input index a tap ``shift`` from its window's start reads, for the windows along
        ``iteration_dim`` (``None``: a size-1 result dim, whose one window starts at 0)."""
        if iteration_dim is None:
            return str(shift)
        index = self._index_of(iteration_dim)
        levels.add(index[0])
        scaled = index if stride == 1 else f"{index} * {stride}"
        if shift == 0:
            return scaled if stride == 1 else f"({scaled})"
        return f"({scaled} {'+' if shift > 0 else '-'} {abs(shift)})"

    def _pool_term(self, access: Access, k: int, position: str | None, levels: set[str]) -> str | None:
        """The offset term of the input's dim ``k`` at ``position``, or (``None``: a batch or
        channel dim) at the result's own index there; ``None`` where it adds nothing."""
        stride = access._stride(k)
        if position is None:
            iteration_dim = access.dim_map[k]
            if iteration_dim is None:  # a size-1 dim: index 0
                return None
            position = self._index_of(iteration_dim)
            levels.add(position[0])
        if stride == "0" or position == "0":
            return None
        return scaled_index(position, stride)

    def _pieces(self, node: fx.Node, dim: int, pieces: list[tuple[Any, Any, fx.Node]], full: bool) -> str:
        """A value made of kernel inputs each covering ``[start, end)`` of ``node``'s dim ``dim``
        (masked loads, shifted by ``start``), zero where none does (slice_backward). Starts and
        ends are ints or SymInts."""
        size = node.meta["val"].shape[dim]
        index = self._index_of(self.group.dim_maps[node][dim])
        loaded: list[tuple[str, str]] = []
        for start, end, item in pieces:
            end_text = self.size_text(end)
            bounds = ([] if static_int(start) == 0 else [f"({index} >= {self.size_text(start)})"]) + (
                [] if same_size(end, size) else [f"({index} < {end_text})"])
            loaded.append((end_text, self._shifted_load(node, item, {dim: start}, bounds, full)))
        if len(loaded) == 1:  # slice_backward: its masked load gave 0 outside the piece
            return loaded[0][1]
        chosen = loaded[-1][1]  # a cat: the last piece is what the others' bounds leave
        for end_text, var in reversed(loaded[:-1]):
            chosen = f"tl.where({index} < {end_text}, {var}, {chosen})"
        return self._tmp(chosen, full)

    def _offset_text(self, shift: Any) -> str:
        """A shift in the kernel, parenthesised when negative (a crop's)."""
        text = self.size_text(shift)
        return f"({text})" if text.startswith("-") else text

    def _index_of(self, iteration_dim: int) -> str:
        level = "r" if iteration_dim in self.r_dims else "x"
        self.used_dims.add((level, iteration_dim))
        return f"{level}{iteration_dim}"

    def _shifted_load(self, node: fx.Node, item: fx.Node, shifts: dict[int, Any], bounds: list[str],
                      full: bool) -> str:
        """Kernel input ``item`` at ``node``'s indices minus ``shifts`` (dim → start), masked by
        ``bounds`` (0 outside them). Never an in-place candidate (``kernels/reuse.py``): the
        store's offset differs."""
        item_meta = item.meta["val"]
        param = self.input_params[item]
        access = Access(self, param, item_meta, self.group.dim_maps[node])
        terms, indices = [], []
        for k, iteration_dim in enumerate(self.group.dim_maps[node]):
            shift = shifts.get(k, 0)
            if iteration_dim is None and static_int(shift) == 0:  # index 0, no term
                continue
            stride = access._stride(k)
            if iteration_dim is None:  # a size-1 result dim reads the input at 0 - shift (a crop's start)
                if stride != "0":
                    terms.append(scaled_index(f"({self._offset_text(-shift)})", stride))
                continue
            index = self._index_of(iteration_dim)
            indices.append(index)
            if stride != "0":
                shifted = index if static_int(shift) == 0 else f"({index} - {self._offset_text(shift)})"
                terms.append(scaled_index(shifted, stride))
        # an input broadcast along every dim (strides 0) still needs a block of pointers (the
        # planner gives these ops a group only where some result dim is not 1)
        offset = " + ".join(terms) or f"0 * {indices[0]}"
        if self.input_offsets.get(item):
            offset = f"{self.input_offsets[item]} + {offset}"
        levels = sorted({index[0] for index in indices})
        mask = " & ".join([f"{level}mask" for level in levels] + bounds)
        self.load_log.append((item, f"shifted:{offset}", len(self.store_offsets)))
        expr = f"tl.load({param} + ({offset}), {mask}, other=0)"
        if compute_dtype(item_meta.dtype) != item_meta.dtype:
            expr += ".to(tl.float32)"
        return self._tmp(expr, full)
