"""The fusion planner: graph → :class:`~ait_dynamo.passes.plan.Plan` of fusion groups and externs.

Nodes are visited in graph order. A fusible node (see ``kernels/op_table.py``) joins the groups of
its producers when their iteration spaces agree, else starts a group; reductions turn a group into
a REDUCTION group over ``(space, reduced dims)``, and later pointwise consumers of the reduced rows
(softmax's division, layer_norm's scaling) join it as an epilogue, except in a column reduction
that would split its rows over programs (``kernels/column_reduction.py``): there a reader of the
sums runs in a kernel of its own, so that the sums can split. Each member carries a *dim map*:
for each of its dims, the iteration dim it runs along (``None`` for a size-1 broadcast dim), which
is how broadcasting and views inside a group become index arithmetic instead of copies.

``refuse`` is the one place that records why a node was not fused; the fusion report shows them.
"""

from __future__ import annotations

import itertools
import logging
import operator
from typing import Any, Sequence

import torch
from torch import fx

from ait_dynamo.kernels import gemm_choice, op_table
from ait_dynamo.kernels.column_reduction import computed_from_reductions, readers_go_apart
from ait_dynamo.kernels.op_table import OpClass
from ait_dynamo.kernels.triton_values import FUSIBLE_DTYPES, Operand, SizeScalar, Unsupported
from ait_dynamo.passes.fusion_checks import CASTS, check_tensor, refuse, tensor_meta, widens_for_a_reduction
from ait_dynamo.passes.fusion_conv import is_depthwise_template, start_conv_group
from ait_dynamo.passes.fusion_gemm import split_gemm_rows, start_gemm_group
from ait_dynamo.passes.fusion_groups import SHIFTED_LOADS, Group, regrow, regrow_along, right_aligned_remap, same_space
from ait_dynamo.passes.fusion_shifted import shifted_input_inside, shifted_inputs, start_shifted_group
from ait_dynamo.passes.graph_utils import is_mutating, meta_value
from ait_dynamo.passes.hoist import hoist_shrinking_steps
from ait_dynamo.passes.host_scalars import is_host_scalar_value
from ait_dynamo.passes.plan import Plan, compute_lifetimes
from ait_dynamo.passes.plan_steps import steps_of_groups
from ait_dynamo.passes.sink import sink_growing_steps
from ait_dynamo.passes.fusion_maps import (DimMap, Refused, edge_agrees, edges_between, reduced_map, reduction_dims,
                                           view_map)
from ait_dynamo.passes.sizes import SizeError, computable, is_one, provably, same_size, symbol_sources

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten


class Planner:
    def __init__(self, gm: fx.GraphModule, config: Any, gemm_measured: dict[str, bool] | None = None):
        self.gm = gm
        self.config = config
        self.gemm_measured = gemm_measured or {}  # GEMM node name → the template measured faster
        self.refusals: dict[str, str] = {}
        self.group_of: dict[fx.Node, Group] = {}
        self.groups: dict[int, Group] = {}
        self.ids = itertools.count()
        self.merged_into: dict[int, int] = {}
        self.index: dict[fx.Node, int] = {}
        self.span: dict[int, tuple[int, int]] = {}  # group ident → graph positions of its first and last node
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.known_symbols = set(symbol_sources(placeholders, lambda n: n.name))

    # -- group bookkeeping --------------------------------------------------------------------

    def _root(self, ident: int) -> int:
        while ident in self.merged_into:
            ident = self.merged_into[ident]
        return ident

    def _cutoff(self, first: int) -> int:
        """The latest graph position ``c <= first`` that no group straddles (none has a node before
        ``c`` and one at or after it). Nothing that lies wholly before ``c`` can depend on a node at
        or after ``first``: a chain of dependencies from there would have to enter a group through
        a node before ``c`` and leave it through one after. Before ``first`` alone that does not
        hold: a pad read the sum of a ``t``-``mul``-``add`` group that had been merged with a later
        softmax's tail, and merging that softmax's reductions with the pad's readers closed a
        cycle (random program 361 of ``tests/test_fusion_random_graphs.py``)."""
        cutoff, moved = first, True
        while moved:
            moved = False
            for ident in self.groups:
                low, high = self.span.get(ident, (cutoff, cutoff))  # a group with no node yet
                if low < cutoff <= high:
                    cutoff, moved = low, True
        return cutoff

    def _would_cycle(self, members: list[fx.Node], joining: set[int]) -> bool:
        """True if running ``members`` as one kernel would close a cycle between kernels: some
        input of theirs (through ATen calls and through whole other kernels, which run
        atomically) depends on one of them. The search goes backwards from their inputs; what
        lies wholly before ``_cutoff`` cannot depend on them and is not explored."""
        member_set = set(members)
        first = self._cutoff(min(self.index[m] for m in members))
        seen_nodes: set[fx.Node] = set()
        seen_groups: set[int] = set()
        stack = [u for m in members for u in m.all_input_nodes if u not in member_set]
        while stack:
            node = stack.pop()
            if node in member_set:
                return True
            if node in seen_nodes:
                continue
            seen_nodes.add(node)
            group = self.group_of.get(node)
            if group is None:
                if self.index.get(node, -1) > first:
                    stack.extend(node.all_input_nodes)
                continue
            root = self._root(group.ident)
            if root in joining:
                return True
            if root in seen_groups:
                continue
            seen_groups.add(root)
            if self.span[root][1] < first:
                continue
            for member in group.nodes:
                stack.extend(u for u in member.all_input_nodes if self.group_of.get(u) is not group)
        return False

    def _keeps_apart(self, group: Group, readers: Sequence[fx.Node], joining: Sequence[fx.Node] = ()) -> bool:
        """True when one of ``readers`` reads a reduction of ``group`` plus the ``joining`` nodes
        (directly or through its epilogue) and that group would split its rows over programs (few
        long columns, or few long rows: ``kernels/column_reduction.split_layout``): inside, the
        reader would keep the reduction from splitting (``split_sources``), so the kernel would
        walk its few long columns or rows on as few programs; apart, the reduction splits and the
        reader runs in a kernel of its own. A cast of a reduction stays: it is applied with it."""
        nodes = group.nodes + list(joining)
        members = set(nodes)
        reductions = [n for n in nodes if n.target in op_table.REDUCTIONS]
        if not reductions or group.gemm is not None:
            return False
        downstream = computed_from_reductions(members, reductions)
        reading = [reader for reader in readers if reader.target not in op_table.CASTS and reader not in reductions
                   and any(used in downstream for used in reader.all_input_nodes)]
        if not reading:
            return False
        inputs = [used for member in nodes for used in member.all_input_nodes if used not in members]
        return readers_go_apart(group.space, group.reduced, reductions, inputs, reading)

    def _new_group(self, space: tuple) -> Group:
        group = Group(next(self.ids), tuple(space))
        self.groups[group.ident] = group
        return group

    def _add(self, group: Group, node: fx.Node, dim_map: DimMap) -> None:
        group.nodes.append(node)
        group.maps[node] = tuple(dim_map)
        self.group_of[node] = group
        position = self.index[node]
        low, high = self.span.get(group.ident, (position, position))
        self.span[group.ident] = (min(low, position), max(high, position))

    def _merge(self, first: Group, second: Group) -> Group:
        if first is second:
            return first
        if first.gemm is not None or second.gemm is not None:
            # the epilogue runs on the GEMM's output tile: only nodes that read the tile join
            raise Refused("a GEMM group takes no other group")
        if not same_space(first.space, second.space) and not (
                regrow(first, second.space) or regrow(second, first.space)):
            raise Refused("producer groups have different iteration spaces")
        if first.is_reduction and second.is_reduction and first.reduced != second.reduced:
            raise Refused("producer groups reduce different dims")
        if (first.has_shifted_loads or second.has_shifted_loads) and (first.is_reduction or second.is_reduction):
            raise Refused("shifted, masked loads (cat, pad, slice_backward) stay out of reduction kernels")
        if shifted_input_inside(set(first.nodes) | set(second.nodes)):
            raise Refused("a cat's or pad's input would run inside its kernel, in another index space")
        maps = {**first.maps, **second.maps}
        reduced = first.reduced or second.reduced
        for user, used in edges_between(first.nodes, second.nodes):
            if not edge_agrees(user, used, maps, reduced):
                raise Refused(f"{user.name} reads {used.name} along other iteration dims than the merged group has")
        first.reduced = reduced
        for node in second.nodes:
            self._add(first, node, second.maps[node])
        self.merged_into[second.ident] = first.ident
        del self.groups[second.ident]
        return first

    # -- node kinds ---------------------------------------------------------------------------

    def _node_map(self, node: fx.Node, group: Group, shape: tuple) -> DimMap:
        """Dim map of a pointwise ``node`` joining ``group``: from its in-group operands where they
        say, else by right-aligned broadcasting against the group's space."""
        dims: list[int | None] = [None] * len(shape)
        known = [False] * len(shape)
        for used in node.all_input_nodes:
            if self.group_of.get(used) is not group:
                continue
            if used is group.gemm and len(group.gemm_rows) > 1:
                raise Refused("reads the GEMM's [M, N] product where the group runs over its reshaped rows")
            used_shape = tuple(tensor_meta(used).shape)
            offset = len(shape) - len(used_shape)
            if offset < 0:
                raise Refused("operand has more dims than the result")
            for k, target in enumerate(group.maps[used]):
                if target is None:
                    continue
                position = k + offset
                if known[position] and dims[position] != target:
                    raise Refused("operands run along different iteration dims")
                dims[position], known[position] = target, True
        offset = len(group.space) - len(shape)
        for k, size in enumerate(shape):
            if known[k]:
                continue
            if is_one(size):
                continue
            target = k + offset
            if target < 0 or not same_size(size, group.space[target]):
                raise Refused("result does not line up with the group's iteration space")
            dims[k] = target
        mapped = [d for d in dims if d is not None]
        if len(set(mapped)) != len(mapped):
            raise Refused("two dims of the result run along one iteration dim")
        for k, target in enumerate(dims):
            if target is not None and not same_size(shape[k], group.space[target]):
                raise Refused("size differs from the iteration space")
        return tuple(dims)

    def _try_emit(self, node: fx.Node) -> None:
        """Run the op table's emitter on placeholder operands: raises if the node is unsupported."""
        rule = op_table.POINTWISE[node.target]

        def operand(value: Any) -> Any:
            if isinstance(value, fx.Node):
                if isinstance(meta_value(value), torch.SymInt):
                    return self._size_scalar(value)
                meta = tensor_meta(value)
                if meta is None:
                    raise Refused("operand is neither a tensor nor a symbolic int")
                if meta.dtype not in FUSIBLE_DTYPES and not (meta.dtype == torch.float64 and node.target in CASTS):
                    raise Refused(f"operand dtype {meta.dtype} is not fused")
                return Operand("v", meta.dtype)
            if isinstance(value, (list, tuple)):
                return type(value)(operand(v) for v in value)
            return value

        args = [operand(a) for a in node.args]
        kwargs = {k: operand(v) for k, v in node.kwargs.items()}
        try:
            rule.emit(*args, **kwargs)
        except Unsupported as error:
            raise Refused(str(error)) from None
        except TypeError as error:
            raise Refused(f"arguments not understood ({error})") from None

    def _size_scalar(self, node: fx.Node) -> SizeScalar:
        """A symbolic int operand: the kernel computes it from the sizes the wrapper passes."""
        size = meta_value(node)
        if not computable(size, self.known_symbols):
            raise Refused(f"symbolic int {size} cannot be computed at run time")
        return SizeScalar("v", torch.int64, positive=provably(size >= 1))

    def _iota(self, node: fx.Node) -> None:
        value = check_tensor(node, self.known_symbols)
        if value.dtype.is_floating_point or value.dtype == torch.bool:
            raise Refused(f"arange of {value.dtype} (ATen accumulates float aranges in a wider type)")
        start, step = op_table.iota_arguments(node.target, node.args)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, step)):
            raise Refused("arange with symbolic or non-integer start/step")
        if node.kwargs.get("layout") not in (None, torch.strided) or node.kwargs.get("pin_memory"):
            raise Refused("arange with a layout or pinned memory")
        self._pointwise(node, emit_check=False)

    def _random(self, node: fx.Node) -> None:
        if getattr(self.config, "fallback_random", True):
            raise Refused("random op kept in ATen (fallback_random=True: results match eager's seed)")
        value = check_tensor(node, self.known_symbols)
        if not value.dtype.is_floating_point:
            raise Refused(f"random {value.dtype}")
        if any(not isinstance(s, int) for s in value.shape):
            raise Refused("random tensor of symbolic shape")
        if node.kwargs.get("generator") is not None:
            raise Refused("random op with an explicit generator")
        if node.kwargs.get("layout") not in (None, torch.strided) or node.kwargs.get("pin_memory"):
            raise Refused("random op with a layout or pinned memory")
        self._pointwise(node, emit_check=False)

    def _pointwise(self, node: fx.Node, emit_check: bool = True) -> None:
        value = check_tensor(node, self.known_symbols)
        for used in node.all_input_nodes:
            meta = tensor_meta(used)
            # a 0-d CPU tensor is a kernel argument by value (passes/host_scalars.py)
            if meta is not None and meta.device != value.device and not is_host_scalar_value(used):
                raise Refused("moves data between devices")
        if emit_check:
            self._try_emit(node)
        shape = tuple(value.shape)
        producers = []
        for used in node.all_input_nodes:
            group = self.group_of.get(used)
            if group is not None and group not in producers:
                producers.append(group)
        candidates = [g for g in producers]
        if widens_for_a_reduction(node):
            # the template's epilogue is pointwise on its tile, so the reduction reading this
            # cast starts a kernel of its own: joining the template would write the value wide
            # for it to read back wide. Left out, the cast joins the reduction's kernel, which
            # reads the narrow value (ConvNeXt-T's depthwise template + LayerNorm on an H100,
            # benchmarks/results/nvidia-h100/session_1205d/: with the float32 copies, 275 MB a
            # step, the template bought nothing, kernels 2.265 ms against Inductor's 2.269)
            candidates = [g for g in candidates if g.gemm is None]
        joined: Group | None = None
        if candidates:
            joined = self._join(node, candidates, shape)
        if joined is None:
            group = self._new_group(shape)
            self._add(group, node, tuple(None if is_one(s) else d for d, s in enumerate(shape)))

    def _join(self, node: fx.Node, candidates: list[Group], shape: tuple) -> Group | None:
        """Join ``node`` to as many producer groups as can be merged, largest first."""
        # a GEMM group first: joining it saves writing the product and reading it back
        ordered = sorted(candidates, key=lambda g: (g.gemm is None, -len(g.nodes)))
        # the largest prefixes first, then each smaller producer alone: a squeeze-excitation's
        # y * sigmoid(s) cannot join y's reduction group (s is computed from it), but can join
        # the sigmoid's, which is then widened to y's space instead of being a kernel of its own
        attempts = [ordered[:count] for count in range(len(ordered), 0, -1)] + [[g] for g in ordered[1:]]
        for chosen in attempts:
            ids = {g.ident for g in chosen}
            members = [n for g in chosen for n in g.nodes] + [node]
            if self._would_cycle(members, ids):
                continue
            snapshot = [(g, g.space, g.reduced, list(g.nodes), dict(g.maps)) for g in chosen]
            try:
                self._widen_small_producers(node, chosen, shape)
                group = chosen[0]
                for other in chosen[1:]:
                    group = self._merge(group, other)
                if not same_space(shape, group.space):
                    regrow(group, tuple(shape))  # a no-op when the node is the smaller one
                dim_map = self._node_map(node, group, shape)
                # the merged groups' members too: a reader of the reduction in another producer
                # group (T5's where, read by the clamp that joins here) would come in with it
                if self._keeps_apart(group, group.nodes + [node], joining=[node]):
                    raise Refused("reads the reduction of a group whose rows split: a kernel of its own")
            except Refused as error:
                self._restore(snapshot)
                log.debug("%s does not join %s: %s", node.name, [g.ident for g in chosen], error)
                continue
            self._add(group, node, dim_map)
            return group
        return None

    def _widen_small_producers(self, node: fx.Node, chosen: list[Group], shape: tuple) -> None:
        """Before ``node`` joins ``chosen``: a producer group whose space neither is ``shape`` nor
        broadcasts to it right-aligned, but whose value ``node`` reads broadcast (a per-channel
        scale), is widened to ``shape`` (``fusion_groups.regrow_along``)."""
        for group in chosen:
            if same_space(group.space, shape) or right_aligned_remap(group.space, shape) is not None:
                continue  # nothing to widen, or regrow's right alignment does it
            for used in node.all_input_nodes:
                if self.group_of.get(used) is group and regrow_along(group, used, tuple(tensor_meta(used).shape), shape):
                    break

    def _restore(self, snapshot: list) -> None:
        for group, space, reduced, nodes, maps in snapshot:
            group.space, group.reduced, group.nodes, group.maps = space, reduced, nodes, maps
            self.groups[group.ident] = group
            self.merged_into.pop(group.ident, None)
            for node in nodes:
                self.group_of[node] = group
            if nodes:
                self.span[group.ident] = (min(self.index[n] for n in nodes), max(self.index[n] for n in nodes))

    def _reduction(self, node: fx.Node) -> None:
        value = check_tensor(node, self.known_symbols)
        source = node.args[0]
        if not isinstance(source, fx.Node):
            raise Refused("reduction of a non-tensor")
        source_meta = check_tensor(source, self.known_symbols)
        extra = [a for a in node.all_input_nodes if a is not source]
        if extra:
            raise Refused("reduction with symbolic arguments")
        if source_meta.dim() == 0:
            raise Refused("reduction of a 0-dim tensor")
        if source_meta.dtype == torch.bool and op_table.REDUCTIONS[node.target] in ("max", "min"):
            raise Refused("amax/amin of bool")
        if value.dtype.is_floating_point != source_meta.dtype.is_floating_point and op_table.REDUCTIONS[node.target] not in (
            "sum", "prod", "any", "all"
        ):
            raise Refused("reduction changes the dtype class")
        dims, keepdim = reduction_dims(node, source_meta.dim())
        if op_table.REDUCTIONS[node.target] in ("max", "min"):
            reduced_sizes = [source_meta.shape[d] for d in dims]
            if any(isinstance(s, int) and s == 0 for s in reduced_sizes):
                raise Refused("amax/amin over an empty dim (ATen raises)")
        group = self.group_of.get(source)
        source_shape = tuple(source_meta.shape)
        if group is not None:
            source_map = group.maps[source]
            full = {m for m in source_map if m is not None}
            non_unit = {d for d, s in enumerate(group.space) if not is_one(s)}
            reduced = frozenset(source_map[d] for d in dims if source_map[d] is not None)
            joinable = (
                group.gemm is None  # the template's epilogue is pointwise on the tile
                and not group.has_shifted_loads  # masked loads stay out of reduction kernels
                and full >= non_unit
                and not self._would_cycle(group.nodes + [node], {group.ident})
                and (not group.is_reduction or group.reduced == reduced)
                and reduced
                and not self._keeps_apart(group, [node])
            )
            if joinable:
                group.reduced = reduced
                self._add(group, node, reduced_map(source_map, dims, keepdim))
                return
            log.debug("%s starts its own group (source group space differs)", node.name)
        group = self._new_group(source_shape)
        identity = tuple(None if is_one(s) else d for d, s in enumerate(source_shape))
        reduced = frozenset(identity[d] for d in dims if identity[d] is not None)
        if not reduced:
            self._forget(group)
            raise Refused("reduces only size-1 dims")
        group.reduced = reduced
        self._add(group, node, reduced_map(identity, dims, keepdim))

    def _forget(self, group: Group) -> None:
        self.groups.pop(group.ident, None)

    def _view(self, node: fx.Node) -> None:
        value = check_tensor(node, self.known_symbols)
        source = node.args[0]
        group = self.group_of.get(source) if isinstance(source, fx.Node) else None
        if group is None:
            raise Refused("view of a tensor computed outside any group (a metadata-only ATen call)")
        source_map = group.maps[source]
        source_shape = tuple(tensor_meta(source).shape)
        shape = tuple(value.shape)
        if source is group.gemm and len(group.gemm_rows) > 1:
            raise Refused("a second view of a GEMM product whose rows the group already split")
        if source is group.gemm and is_depthwise_template(source):
            raise Refused("a view of a convolution the template computes (its tile is the output's space)")
        if source is group.gemm and split_gemm_rows(self, group, node, shape):
            return
        dim_map = view_map(node, source_shape, source_map, shape)
        for k, target in enumerate(dim_map):
            if target is not None and not same_size(shape[k], group.space[target]):
                raise Refused("view result does not line up with the iteration space")
        self._add(group, node, dim_map)

    # -- driver -------------------------------------------------------------------------------

    def visit(self, node: fx.Node) -> None:
        if not self.config.fusion:
            return
        if self.config.is_fallback(node.target):
            refuse(self.refusals, node, "listed in fallback_ops")
            return
        if node.op != "call_function":
            refuse(self.refusals, node, f"{node.op} node")
            return
        if is_mutating(node):
            refuse(self.refusals, node, "mutates an input (kept in ATen)")
            return
        kind = op_table.op_class(node.target)
        try:
            if node.target in SHIFTED_LOADS:
                for item in shifted_inputs(node):  # their sizes bound the shifted loads
                    check_tensor(item, self.known_symbols)
                start_shifted_group(self, node, check_tensor(node, self.known_symbols))
            elif node.target in op_table.IOTA:
                self._iota(node)
            elif kind is OpClass.POINTWISE:
                self._pointwise(node)
            elif kind is OpClass.REDUCTION:
                self._reduction(node)
            elif kind is OpClass.VIEW:
                self._view(node)
            elif node.target in op_table.RANDOM_UNIFORM:
                self._random(node)
            elif node.target in gemm_choice.GEMMS:
                start_gemm_group(self, node)
            elif node.target is aten.convolution.default:
                start_conv_group(self, node)
            elif node.target is operator.getitem or kind is OpClass.OTHER:
                if node.target is not operator.getitem and isinstance(node.target, torch._ops.OpOverload):
                    refuse(self.refusals, node, "not in the op table")
            else:
                refuse(self.refusals, node, f"{kind.value} op")
        except (Refused, SizeError) as error:
            refuse(self.refusals, node, str(error))

    def run(self) -> tuple[Plan, dict[str, str]]:
        graph = self.gm.graph
        placeholders: list[fx.Node] = []
        output: fx.Node | None = None
        order: list[fx.Node] = []
        self.index = {node: position for position, node in enumerate(graph.nodes)}
        self.nodes_in_order = list(graph.nodes)
        for node in graph.nodes:
            if node.op == "placeholder":
                placeholders.append(node)
            elif node.op == "output":
                output = node
            else:
                self.visit(node)
                order.append(node)
        assert output is not None, "an FX graph always ends in an output node"
        if self.config.fusion:
            self._fuse_horizontally()
        steps = hoist_shrinking_steps(steps_of_groups(order, output, self.group_of))
        plan = Plan(graph=graph, placeholders=placeholders, steps=steps, output=output)
        compute_lifetimes(plan)
        sink_growing_steps(plan)
        return plan, self.refusals

    def _neighbours(self, first: Group, second: Group) -> bool:
        """True when no ATen call lies between the two groups in graph order. A merged group
        runs where its first consumer needs it, so merging distant groups computes the later
        one's values early and keeps them alive meanwhile: in ViT-B's backward, merging the
        twelve layers' GELU recomputations held 12 x 74 MiB at the start of the backward."""
        spans = sorted(
            (min(self.index[n] for n in g.nodes), max(self.index[n] for n in g.nodes)) for g in (first, second)
        )
        (_, earlier_end), (later_begin, _) = spans
        for node in self.nodes_in_order[earlier_end + 1:later_begin]:
            if node.op != "call_function" or node in self.group_of:
                continue
            if node.target is operator.getitem or node.target in op_table.VIEWS:
                continue
            return False
        return True

    def _fuse_horizontally(self) -> None:
        """Merge independent neighbouring groups over the same iteration space, reduced dims and
        device: one launch instead of several, and inputs they share are read once."""
        buckets: dict[Any, list[Group]] = {}
        for group in sorted(self.groups.values(), key=lambda g: g.ident):
            if group.gemm is not None:  # one GEMM per template kernel
                continue
            device = tensor_meta(group.nodes[0]).device
            key = (tuple(str(s) for s in group.space), group.reduced, str(device))
            buckets.setdefault(key, []).append(group)
        for candidates in buckets.values():
            merged: list[Group] = []
            for group in candidates:
                for target in merged:
                    if not all(same_size(a, b) for a, b in zip(group.space, target.space)):
                        continue
                    if not self._neighbours(target, group):
                        continue
                    if self._would_cycle(group.nodes + target.nodes, {group.ident, target.ident}):
                        continue
                    if self._keeps_apart(target, target.nodes + group.nodes, joining=group.nodes):
                        continue  # one would read the other's column sums and keep them from splitting
                    try:
                        self._merge(target, group)
                    except Refused as error:
                        log.debug("groups %d and %d stay apart: %s", target.ident, group.ident, error)
                        continue
                    break
                else:
                    merged.append(group)


def build_plan(gm: fx.GraphModule, config: Any,
               gemm_measured: dict[str, bool] | None = None) -> tuple[Plan, dict[str, str]]:
    """Steps in dependency order; returns the plan and the refusals (node name → reason).
    ``gemm_measured``: GEMM node name → whether the template measured faster than cuBLAS."""
    return Planner(gm, config, gemm_measured).run()
