"""A fusion group of the planner (``passes/fusion.py``) and the arithmetic on its iteration space:
whether two spaces agree, and widening a pointwise group to a larger space it broadcasts to, so
that its ops are recomputed per element of the consumer instead of running as a kernel of their
own."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx

from ait_dynamo.passes.fusion_maps import DimMap
from ait_dynamo.passes.sizes import is_one, same_size

aten = torch.ops.aten
# ops whose kernel loads their tensor inputs at shifted, masked indices (passes/fusion_shifted.py):
# their inputs are never members of their group
SHIFTED_LOADS = frozenset({aten.cat.default, aten.slice_backward.default, aten.constant_pad_nd.default,
                           aten.max_pool2d.default})

# A producer group of at most this many ops may be recomputed per element of a larger consumer
# (``regrow_along``): batch norm's per-channel scale is 3-5 ops.
SMALL_GROUP_NODES = 8


@dataclass
class Group:
    ident: int
    space: tuple
    reduced: frozenset = frozenset()
    nodes: list[fx.Node] = field(default_factory=list)
    maps: dict[fx.Node, DimMap] = field(default_factory=dict)
    gemm: fx.Node | None = None  # a template group's mm / addmm / bmm or depthwise convolution: the others are its epilogue
    gemm_rows: tuple[int, ...] = (0,)  # iteration dims the GEMM's rows (M) run over, flattened

    @property
    def is_reduction(self) -> bool:
        return bool(self.reduced)

    @property
    def kind(self) -> str:
        """The plan step's kind (``FusionGroup.kind``): a template group's "gemm" or "conv"."""
        if self.gemm is not None:
            return "conv" if self.gemm.target is torch.ops.aten.convolution.default else "gemm"
        return "reduction" if self.is_reduction else "pointwise"

    @property
    def has_shifted_loads(self) -> bool:
        """Holds a cat, slice_backward, constant_pad_nd or max_pool2d, whose input the kernel loads at
        shifted indices."""
        return any(node.target in SHIFTED_LOADS for node in self.nodes)

    @property
    def widenable(self) -> bool:
        """Pointwise: its space may grow (a reduction's or GEMM's is fixed by what it computes)."""
        return not self.is_reduction and self.gemm is None


def same_space(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(same_size(x, y) for x, y in zip(a, b))


def right_aligned_remap(space: tuple, target: tuple) -> list[int | None] | None:
    """Where each dim of ``space`` lands when it broadcasts to ``target`` (right-aligned, as ATen
    broadcasts; ``None`` for a size-1 dim), or ``None`` if it does not broadcast."""
    offset = len(target) - len(space)
    if offset < 0:
        return None
    remap: list[int | None] = []
    for d, size in enumerate(space):
        if same_size(size, target[d + offset]):
            remap.append(d + offset)
        elif is_one(size):
            remap.append(None)
        else:
            return None
    return remap


def _widen(group: Group, remap: list[int | None], space: tuple) -> None:
    group.maps = {n: tuple(None if m is None else remap[m] for m in dim_map) for n, dim_map in group.maps.items()}
    group.space = tuple(space)


def regrow(group: Group, space: tuple) -> bool:
    """Widen a pointwise group's space to ``space`` (its old space broadcasts to it)."""
    remap = right_aligned_remap(group.space, space) if group.widenable else None
    if remap is None:
        return False
    _widen(group, remap, space)
    return True


def regrow_along(group: Group, used: fx.Node, used_shape: tuple, shape: tuple) -> bool:
    """Widen a small pointwise group to ``shape`` by how its member ``used`` (of ``used_shape``)
    broadcasts, right-aligned, into a node of that shape. ``regrow`` aligns the group's own
    space, which fails for a per-channel value that reaches the consumer through unsqueezes:
    batch norm's scale, computed over [C] and read as [C, 1, 1] by an [N, C, H, W] kernel. Left
    alone that is a kernel of its own per batch norm, of a few dozen elements (ResNet-50 has 53
    batch norms); widened, its few ops are recomputed per element inside the consumer, as
    Inductor does."""
    if not group.widenable or len(group.nodes) > SMALL_GROUP_NODES:
        return False
    offset = len(shape) - len(used_shape)
    if offset < 0:
        return False
    remap: list[int | None] = [None] * len(group.space)
    for k, target in enumerate(group.maps[used]):
        if target is None:
            continue
        if not same_size(used_shape[k], shape[k + offset]) or remap[target] is not None:
            return False
        remap[target] = k + offset
    if any(r is None and not is_one(size) for r, size in zip(remap, group.space)):
        return False  # an iteration dim the read does not show: it has no place in ``shape``
    _widen(group, remap, shape)
    return True
