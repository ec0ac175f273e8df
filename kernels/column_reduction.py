"""Split reductions: which reductions walk rows of a row-major tensor (column reductions), and
which reductions split their rows over programs.

A column reduction (a bias gradient, a layer_norm weight gradient) reduces over rows while its
inputs are contiguous along a kept dim: the kernel walks rows in chunks with many columns per
program, so loads coalesce. With few long columns it also splits the rows over ``program_id(1)``
into float32 partial results that a second kernel combines (``kernels/split_sum.py``). Unsplit, a
(32768, 768) weight gradient ran on 12 programs: 912 us on an H200 (profile_before/), against a
floor of ~50 us (its 200 MB of float32 inputs at the measured 4 TB/s copy rate).

A looped row reduction with few long rows (a whole tensor's sum, T5's ``isinf(x).any()`` over
524288 elements: one program, 61 us on the H200) splits each row the same way.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import fx

from ait_dynamo.kernels import op_table
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.sizes import is_one, same_size, static_int

aten = torch.ops.aten

# Views that keep the row-major order of a contiguous tensor's elements (a reshape of a split
# sum's result gives them).
_ORDER_KEEPING_VIEWS = frozenset({
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
    aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.alias.default,
})

SplitSources = dict[fx.Node, tuple[fx.Node, tuple[torch.dtype, ...]]]


def is_column_layout(inputs: Iterable[fx.Node], space: list[Any], x_nonunit: list[int], r_nonunit: list[int]) -> bool:
    """True when the inputs laid out like the iteration space are contiguous along a kept dim
    (reducing over rows of a row-major tensor: a bias gradient, a layer_norm weight grad)."""
    if not x_nonunit or not r_nonunit:
        return False
    inner_x = x_nonunit[-1]
    for node in inputs:
        meta = node.meta.get("val")
        if not isinstance(meta, torch.Tensor) or meta.dim() != len(space):
            continue
        if not all(same_size(a, b) for a, b in zip(meta.shape, space)):
            continue
        strides = meta.stride()
        if same_size(strides[inner_x], 1) and not any(same_size(strides[d], 1) for d in r_nonunit):
            return True
    return False


# What a split can combine from float32 partial results: sums (a mean's partials are divided
# already), extremes of floating-point values (exact in float32), and any / all as 0.0 / 1.0.
SPLIT_KINDS = frozenset({"sum", "mean", "max", "min", "any", "all"})


def static_splits(kept: Iterable[Any], reduced: Iterable[Any], column: bool = True) -> int | None:
    """How many splits ``runtime.reduction_split`` gives a reduction over the ``kept`` and
    ``reduced`` sizes, or ``None`` where a size is symbolic (a column split is then decided per
    call; a row reduction does not split)."""
    from ait_dynamo.kernels import runtime

    xnumel = static_int(math.prod([1, *kept]))
    rnumel = static_int(math.prod([1, *reduced]))
    return None if xnumel is None or rnumel is None else runtime.reduction_split(xnumel, rnumel, column)[1]


def row_splits(kept: Iterable[Any], reduced: Iterable[Any], persistent_max: int) -> bool:
    """True when a row reduction (not a column one) over static sizes is looped (longer rows
    than ``persistent_max``) and would split its few long rows over programs."""
    rnumel = static_int(math.prod([1, *reduced]))
    if rnumel is None or rnumel <= persistent_max:
        return False
    splits = static_splits(kept, reduced, column=False)
    return splits is not None and splits > 1


def split_layout(space: tuple, reduced: frozenset, reductions: list[fx.Node], inputs: Iterable[fx.Node]) -> str | None:
    """``"column"`` (few long columns) or ``"row"`` (few long rows of a looped kernel) when a
    reduction group over ``space`` reducing ``reduced``, made of reductions a split combines
    (``SPLIT_KINDS``), would split its rows over programs if nothing in it read its results (the
    planner keeps such readers out: ``passes/fusion.py``); else ``None``."""
    from ait_dynamo.kernels.codegen import PERSISTENT_MAX_ROW

    if not reductions or any(op_table.REDUCTIONS[r.target] not in SPLIT_KINDS for r in reductions):
        return None
    x_dims = [d for d in range(len(space)) if d not in reduced]
    r_dims = [d for d in range(len(space)) if d in reduced]
    x_nonunit = [d for d in x_dims if not is_one(space[d])]
    r_nonunit = [d for d in r_dims if not is_one(space[d])]
    kept, summed = [space[d] for d in x_dims], [space[d] for d in r_dims]
    if not is_column_layout(inputs, list(space), x_nonunit, r_nonunit):
        return "row" if row_splits(kept, summed, PERSISTENT_MAX_ROW) else None
    splits = static_splits(kept, summed)
    return "column" if splits is not None and splits > 1 else None


def _cast_chain(node: fx.Node, members: set[fx.Node]) -> tuple[fx.Node, tuple[torch.dtype, ...]]:
    """(the value under a chain of in-group dtype casts and order-keeping reshapes ending at
    ``node``, the cast dtypes). A split sum reshapes its result to the output's shape, so a
    bias gradient (``sum(dim=[0, 1])`` of a 3-d gradient, then ``view``) splits as well:
    unsplit, ViT-B/16's bias sums over 12608 rows took 85-117 us each on the H200, 4-6x their
    memory floor (training_cuda_graphs/before_kernel_fixes_7fd5019/vit_b16_ait.txt)."""
    casts: list[torch.dtype] = []
    while (node.target in op_table.CASTS or node.target in _ORDER_KEEPING_VIEWS) and node.args \
            and node.args[0] in members:
        if node.target in op_table.CASTS:
            casts.append(node.meta["val"].dtype)
        node = node.args[0]
    return node, tuple(reversed(casts))


def reads_reduction(node: fx.Node, members: set[fx.Node], reductions: list[fx.Node]) -> bool:
    """True when ``node`` is a reduction or computed from one inside the group."""
    targets = set(reductions)
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current in seen or current not in members:
            continue
        seen.add(current)
        if current in targets:
            return True
        stack.extend(current.all_input_nodes)
    return False


def computed_from_reductions(members: set[fx.Node], reductions: list[fx.Node]) -> set[fx.Node]:
    """Every node of the group for which :func:`reads_reduction` holds, in one walk forwards from
    the reductions. The planner asks it of every input of every reader of a group, where a walk
    backwards per question was the planning's largest cost (0270c86 took a BERT-base training
    step's planning from 1.74 to 0.78 s: benchmarks/results/cpu-epyc/compile_time/)."""
    found = {r for r in reductions if r in members}
    stack = list(found)
    while stack:
        for user in stack.pop().users:
            if user in members and user not in found:
                found.add(user)
                stack.append(user)
    return found


def _combinable(reduction: fx.Node) -> bool:
    """A reduction whose float32 partial results the finishing kernel combines exactly as one
    pass would: a floating-point sum, mean, max or min, or an any / all."""
    kind = op_table.REDUCTIONS[reduction.target]
    if kind not in SPLIT_KINDS:
        return False
    return kind in ("any", "all") or reduction.meta["val"].dtype.is_floating_point


def split_sources(group: FusionGroup, x_nonunit: list[int]) -> SplitSources | None:
    """Per reduced output, (the reduction it is, the casts after it) when the reduction can split
    its rows: every output is a floating-point sum, mean, max or min or an any / all over all
    kept dims (or casts and reshapes of one), or a full-size value computed from no reduction
    (squeeze-excitation's pooled activation: each split stores its own rows of it), and nothing
    else in the group reads a reduction. ``None`` when it cannot."""
    if group.output_copies:
        return None
    members = set(group.nodes)
    reductions = [n for n in group.nodes if n.target in op_table.REDUCTIONS]
    sources: SplitSources = {}
    chain_members: set[fx.Node] = set()
    for node in group.outputs:
        source, casts = _cast_chain(node, members)
        if source not in reductions and not reads_reduction(node, members, reductions):
            continue  # stored whole by the split that holds its rows
        if source not in reductions or not _combinable(source):
            return None
        sources[node] = (source, casts)
        walk = node
        while walk is not source:
            chain_members.add(walk)
            walk = walk.args[0]
        meta = node.meta["val"]
        if not (meta.dtype.is_floating_point or meta.dtype == torch.bool) or not meta.is_contiguous():
            return None
        covered = [m for m in group.dim_maps[node] if m is not None]
        if covered != x_nonunit:
            return None
    if not sources:
        return None
    for node in group.nodes:  # no epilogue but casts: nothing else reads a reduction
        if node in reductions or node in chain_members:
            continue
        if any(used in reductions for used in node.all_input_nodes):
            return None
    return sources


# Rows longer than this split even where a full-size reader would keep them in one looped kernel:
# one program walks a 2048-element chunk in ~0.24 us on the H200 (kernels/runtime.py), so a
# three-pass softmax over a row of 65536 would take ~24 us on one program at that rate (an
# estimate from that figure, not a measurement of softmax).
_LONG_ROW = 65536


def _row_level(node: fx.Node, kept: Any) -> bool:
    """True when ``node``'s value has no more elements than a reduction's kept space."""
    value = node.meta.get("val")
    numel = static_int(value.numel()) if isinstance(value, torch.Tensor) else None
    bound = static_int(kept)
    return numel is not None and bound is not None and numel <= bound


def readers_go_apart(space: tuple, reduced: frozenset, reductions: list[fx.Node], inputs: Iterable[fx.Node],
                     reading: list[fx.Node]) -> bool:
    """The planner's rule for ``reading``, nodes that read the reductions of a group over
    ``space``: True when they run in a kernel of their own so that the group splits its rows.
    Always for a column split. For a row split, a full-size reader (softmax's exp(x - max)) stays
    where the row is not too long for its program: in the looped kernel it reads the row in a pass
    of the same kernel, apart a kernel of its own would read it again; a reader of the result
    alone (T5's where on its any) goes, and takes the full-size ones that read it along."""
    layout = split_layout(space, reduced, reductions, inputs)
    if layout != "row":
        return layout is not None
    kept = math.prod([1] + [s for d, s in enumerate(space) if d not in reduced])
    row = math.prod([1] + [s for d, s in enumerate(space) if d in reduced])
    return (static_int(row) or 0) > _LONG_ROW or any(_row_level(reader, kept) for reader in reading)
