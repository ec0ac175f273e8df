"""Groups of the fusion planner that start at an op whose kernel loads its inputs at shifted,
masked indices (``kernels/codegen_shifted.py`` writes them): ``cat``, ``slice_backward``,
``constant_pad_nd`` and ``max_pool2d`` (one load per window tap). Each starts a group of its own
over its result's space; consumers join it like any pointwise group. Their inputs never join it
(``passes/fusion.py`` refuses such merges): they are not in the result's index space. Reductions
stay out of these groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from ait_dynamo.kernels.triton_values import FUSIBLE_DTYPES, Unsupported, literal
from ait_dynamo.passes.fusion_checks import tensor_meta
from ait_dynamo.passes.fusion_groups import SHIFTED_LOADS
from ait_dynamo.passes.fusion_maps import Refused, pad_amounts, pool_window, slice_backward_span
from ait_dynamo.passes.sizes import computable, is_one, provably, same_size

if TYPE_CHECKING:
    from ait_dynamo.passes.fusion import Planner

aten = torch.ops.aten

# A fused cat issues every input's (predicated) load at every element: the bytes moved are the
# same as ATen's copy per input, the address arithmetic and predicates grow with the inputs. Four
# covers rotate_half (2), a q/k/v split's backward (3) and Swin's patch merging (4); where the
# balance tips is not measured yet.
MAX_CAT_INPUTS = 4
# A fused max pool issues one masked load per window tap and per element; 5 x 5 covers the pools
# of the model suite (ResNet's stem is 3 x 3) and keeps the unrolled source short. Larger windows
# stay ATen calls.
MAX_POOL_TAPS = 25


def shifted_inputs(node: fx.Node) -> list[Any]:
    """The tensors a shifted-load op reads at shifted indices."""
    return list(node.args[0]) if node.target is aten.cat.default else [node.args[0]]


def shifted_input_inside(members: set[fx.Node]) -> bool:
    """Whether one of ``members`` reads another at shifted indices (it cannot: see the module doc)."""
    return any(item in members for node in members if node.target in SHIFTED_LOADS for item in shifted_inputs(node))


def start_shifted_group(planner: "Planner", node: fx.Node, value: torch.Tensor) -> None:
    """Check ``node`` (whose result ``value`` the planner checked) and start its group."""
    if node.target is aten.slice_backward.default:
        _check_slice_backward(node, value, planner.known_symbols)
    else:
        {aten.cat.default: _check_cat, aten.constant_pad_nd.default: _check_constant_pad,
         aten.max_pool2d.default: _check_max_pool}[node.target](node, value)
    shape = tuple(value.shape)
    group = planner._new_group(shape)
    planner._add(group, node, tuple(None if is_one(s) else d for d, s in enumerate(shape)))


def _same_kind_source(node: fx.Node, value: torch.Tensor) -> torch.Tensor:
    """The meta value of ``node``'s first argument, a tensor of ``value``'s dtype and device."""
    meta = tensor_meta(node.args[0])
    if meta is None or meta.dtype != value.dtype or meta.dtype not in FUSIBLE_DTYPES or meta.device != value.device:
        raise Refused(f"{node.target.__name__} of a non-tensor, another dtype or device")
    return meta


def _check_cat(node: fx.Node, value: torch.Tensor) -> None:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
        raise Refused("cat of a non-list or along a symbolic dim")
    rank = value.dim()
    if rank == 0 or not -rank <= dim < rank:
        raise Refused("cat of 0-dim tensors")
    dim %= rank
    if len(tensors) > MAX_CAT_INPUTS:
        raise Refused(f"cat of more than {MAX_CAT_INPUTS} tensors (a load each per element)")
    if provably(value.shape[dim] <= 1):
        raise Refused("cat along a size-1 dim")
    for item in tensors:
        meta = tensor_meta(item)
        if meta is None:
            raise Refused("cat of a non-tensor")
        if meta.dtype != value.dtype or meta.device != value.device:
            raise Refused("cat that promotes dtypes or moves data between devices")
        if meta.dtype not in FUSIBLE_DTYPES:
            raise Refused(f"cat of {meta.dtype}")
        # a piece that may be empty is fine: its loads are masked off (an empty tensor's null
        # pointer is never read); one that is always empty is left to ATen
        if meta.dim() != rank or provably(meta.shape[dim] == 0):
            raise Refused("cat of an empty or differently ranked tensor")
        if any(not same_size(a, b) for k, (a, b) in enumerate(zip(meta.shape, value.shape)) if k != dim):
            raise Refused("cat inputs differ from the result outside the cat dim")


def _check_slice_backward(node: fx.Node, value: torch.Tensor, known_symbols: set) -> None:
    """The gradient of a slice: zeros with the gradient over the slice, one masked load; the add
    that sums such gradients joins it."""
    meta = _same_kind_source(node, value)
    dim, start, end = slice_backward_span(node)
    for bound in (start, end):  # the kernel takes a symbolic bound as an argument
        if not computable(bound, known_symbols):
            raise Refused(f"slice_backward bound {bound} cannot be computed at run time")
    if is_one(value.shape[dim]):
        raise Refused("slice_backward along a size-1 dim")
    if meta.dim() != value.dim() or any(
            not same_size(a, b) for k, (a, b) in enumerate(zip(meta.shape, value.shape)) if k != dim):
        raise Refused("slice_backward whose gradient differs from the result outside the slice dim")


def _check_constant_pad(node: fx.Node, value: torch.Tensor) -> None:
    """``constant_pad_nd`` (GEMM padding, convolution padding; with negative amounts a crop, the
    gradient of a pad): the input where it lies, the fill value elsewhere."""
    meta = _same_kind_source(node, value)
    fill = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    if not isinstance(fill, (int, float)):
        raise Refused("constant_pad_nd with a symbolic fill value")
    try:
        literal(fill, value.dtype)
    except Unsupported as error:
        raise Refused(f"constant_pad_nd fill: {error}") from None
    amounts = pad_amounts(node)
    if all(is_one(s) for s in value.shape):
        raise Refused("constant_pad_nd to a single element")
    for k, (before, after) in amounts.items():
        if provably(meta.shape[k] == 0):
            raise Refused("constant_pad_nd of an empty dim")
        if min(before, after) < 0 and not provably(value.shape[k] >= 1):
            raise Refused("constant_pad_nd that may crop a dim to nothing")
        if max(before, after) > 0 and is_one(value.shape[k]):
            # padding and cropping one dim down to its one element, which may be the fill: the
            # kernel has no index there to bound (a crop alone reads the input at -before)
            raise Refused("constant_pad_nd that pads and crops a dim to one element")


def _check_max_pool(node: fx.Node, value: torch.Tensor) -> None:
    """``max_pool2d`` (``passes/pool_indices.py`` makes it from a pool whose indices nothing
    reads): each result element the maximum of its window's taps, each tap a masked load of the
    input (-inf outside it)."""
    meta = _same_kind_source(node, value)
    if not value.dtype.is_floating_point:
        raise Refused("max_pool2d of integers (the kernel pads with -inf)")
    if value.dim() not in (3, 4) or meta.dim() != value.dim():
        raise Refused("max_pool2d of other than a 3-d or 4-d tensor")
    window = pool_window(node)
    if window.taps > MAX_POOL_TAPS:
        raise Refused(f"max_pool2d window of more than {MAX_POOL_TAPS} taps (a load each per element)")
    if all(is_one(s) for s in value.shape):
        raise Refused("max_pool2d to a single element")
