"""The flow network over the joint graph and the choice of saved values (with a memory budget).

Every joint-graph node ``v`` becomes two vertices ``v_in -> v_out``; the edge between them costs
the bytes of saving ``v``. A cut separates what the forward computes (source side) from what the
backward needs (sink side):

* ``v_in`` on the source side and ``v_out`` on the sink side: ``v`` is saved for the backward;
* ``v_in`` on the sink side: the backward (re)computes ``v``.

Graph inputs hang off the source with infinite edges. Nodes that depend on a tangent hang off the
sink. A forward node that may not be recomputed gets an infinite edge from the source; one that is
costly to recompute gets an edge of ``price * recompute_ns`` (``price`` in bytes per nanosecond:
infinite without a memory budget). The minimum cut minimizes saved bytes plus priced recompute time.
"""

from __future__ import annotations

import math
import operator
import time
import warnings
from dataclasses import dataclass, field

from torch import fx

from ait_dynamo.partitioners.cost_model import NodeCost, Recompute, node_cost
from ait_dynamo.partitioners.graph_info import JointGraphInfo, value_bytes
from ait_dynamo.partitioners.op_classes import OpClass, op_class
from ait_dynamo.partitioners.maxflow import FlowNetwork, min_cut_source_side

# How many priced cuts a memory budget may try at most (each is one max-flow solve).
_MAX_PRICE_STEPS = 48
_PRICE_STEP = 2.0**0.5
# Where one price step starts recomputing many ops at once (a transformer's equal matmuls have
# one bytes-per-nanosecond ratio), cuts that recompute 1/8, 2/8, ... of them fill the gap, so a
# budget between the two ends pays for part of the recompute, not all of it
# (tests/test_partitioner.py::test_memory_budget_recomputes_part_of_a_group_of_equal_matmuls).
# At most this many such cuts per graph.
_PARTIAL_SPLITS = 8
_MAX_PARTIAL_CUTS = 32
# Capacities are bytes times BYTE_SCALE; between cuts that save the same bytes, one unit per node
# decides: a forward node recomputed costs a unit (recompute as little as possible), and so does a
# node no forward output needs computed in the forward (leave it to the backward, where it fuses
# into the gradient kernel instead of adding an output to the forward).
BYTE_SCALE = 64
TIE_BREAK = 1.0


@dataclass
class Cut:
    """One partition choice: what the forward saves and what the backward recomputes."""

    price: float  # bytes per recompute nanosecond this cut was solved at (inf: no budget pressure)
    saved: list[fx.Node]
    recomputed: list[fx.Node]
    saved_bytes: int  # saved values, parameters and buffers excluded (they stay alive anyway)
    recompute_ns: int  # estimated time of the costly recomputes (free ones ride in fused kernels)


@dataclass
class CutChoice:
    cut: Cut
    default_cut: Cut
    budget_bytes: int | None
    budget_met: bool
    cuts_tried: int
    solve_seconds: float
    costs: dict[fx.Node, NodeCost] = field(default_factory=dict)


class PartitionNetwork:
    """The flow network of one joint graph; :meth:`cut` solves it at a recompute price."""

    def __init__(self, info: JointGraphInfo, solver: str = "scipy"):
        self.info = info
        self.solver = solver
        self.costs: dict[fx.Node, NodeCost] = {}
        self.network = FlowNetwork()
        self.in_vertex: dict[fx.Node, int] = {}
        self.out_vertex: dict[fx.Node, int] = {}
        self.priced_edges: list[tuple[int, fx.Node]] = []  # (edge index, node) of costly recomputes
        self._build()

    def _build(self) -> None:
        info, network = self.info, self.network
        inputs = set(info.inputs)
        for node in info.graph.nodes:
            if node.op == "output":
                continue
            cost = node_cost(node, info)
            self.costs[node] = cost
            vin = network.add_vertex()
            self.in_vertex[node] = vin
            for arg in node.all_input_nodes:
                network.add_edge(self.out_vertex[arg], vin, math.inf)
            if node in info.tangents_closure:
                self.out_vertex[node] = vin
                network.add_edge(vin, FlowNetwork.SINK, math.inf)
                continue
            vout = network.add_vertex()
            self.out_vertex[node] = vout
            # an input the forward overwrites cannot be saved: what the backward needs of its old
            # value is computed in the forward and saved (graph_info.forward_mutated_inputs)
            saveable = node not in info.mutated_inputs
            network.add_edge(vin, vout, cost.save_bytes * BYTE_SCALE if saveable else math.inf)
            if node in info.required_bw:  # a gradient output computable without tangents
                network.add_edge(vout, FlowNetwork.SINK, math.inf)
            if node in inputs or cost.op_class == OpClass.RANDOM:
                # Random ops run in the forward, where eager draws them, so that the RNG stream
                # is consumed in the same order; the backward gets their values saved.
                network.add_edge(FlowNetwork.SOURCE, vin, math.inf)
            elif node in info.required_fw:
                if cost.recompute == Recompute.NEVER:
                    network.add_edge(FlowNetwork.SOURCE, vin, math.inf)
                elif cost.recompute == Recompute.COSTLY:
                    self.priced_edges.append((len(network.capacities), node))
                    network.add_edge(FlowNetwork.SOURCE, vin, math.inf)
                elif node.op == "call_function" and cost.op_class != OpClass.VIEW:
                    network.add_edge(FlowNetwork.SOURCE, vin, TIE_BREAK)
            elif node.op == "call_function":
                network.add_edge(vin, FlowNetwork.SINK, TIE_BREAK)

    def cut(self, price: float, forbidden: frozenset[fx.Node] = frozenset()) -> Cut:
        """The minimum cut with costly recomputes priced at ``price`` bytes per nanosecond; the
        costly ops in ``forbidden`` are not recomputed at any price."""
        capacities = self.network.capacities
        for index, node in self.priced_edges:
            ns = self.costs[node].recompute_ns
            priced = math.isfinite(price) and node not in forbidden
            capacities[index] = price * ns * BYTE_SCALE + TIE_BREAK if priced else math.inf
        source_side = min_cut_source_side(self.network, self.solver)
        saved: list[fx.Node] = []
        recomputed: list[fx.Node] = []
        saved_bytes = 0
        recompute_ns = 0
        for node, vin in self.in_vertex.items():
            if node in self.info.tangents_closure:
                continue
            cost = self.costs[node]
            if vin in source_side:
                if self.out_vertex[node] not in source_side:
                    saved.append(node)
                    if math.isfinite(cost.save_bytes):
                        saved_bytes += int(cost.save_bytes)
            elif node in self.info.required_fw and node.op != "placeholder":
                recomputed.append(node)
                if cost.recompute == Recompute.COSTLY:
                    recompute_ns += cost.recompute_ns
        return Cut(price, saved, recomputed, saved_bytes, recompute_ns)

    def price_grid(self) -> list[float]:
        """Recompute prices to try under a memory budget, highest (least recompute) first.

        A geometric grid (factors of sqrt(2)) over the bytes-saved-per-nanosecond ratios of the
        costly recomputes, plus prices just above and below each distinct ratio (where the
        minimum cut changes as one more op becomes worth recomputing). Depends on the graph only,
        never on the budget, so every budget picks from the same cuts: that is what makes a
        smaller budget never save more."""
        ratios = set()
        for _, node in self.priced_edges:
            cost = self.costs[node]
            if math.isfinite(cost.save_bytes) and cost.save_bytes > 0:
                ratios.add(float(f"{cost.save_bytes / cost.recompute_ns:.3g}"))
        if not ratios:
            return [0.0]
        high, low = 2.0 * max(ratios), 0.5 * min(ratios)
        steps = min(max(1, math.ceil(math.log(high / low, _PRICE_STEP))), _MAX_PRICE_STEPS)
        factor = (high / low) ** (1.0 / steps)
        prices = {high / factor**i for i in range(steps + 1)}
        around = sorted(ratios, reverse=True)
        if len(around) > _MAX_PRICE_STEPS // 2:  # keep an even spread of them
            stride = len(around) / (_MAX_PRICE_STEPS // 2)
            around = [around[int(i * stride)] for i in range(_MAX_PRICE_STEPS // 2)]
        for ratio in around:
            prices.update((ratio * 1.001, ratio * 0.999))
        return sorted(prices, reverse=True) + [0.0]

    def partial_cuts(self, cuts: list[Cut]) -> list[Cut]:
        """Cuts between neighbouring priced cuts (``cuts`` from the highest price down) that
        recompute only the first k/``_PARTIAL_SPLITS`` of the costly ops the lower one adds, in
        graph order. Like the price grid, they depend on the graph only, never on the budget."""
        partial: list[Cut] = []
        seen = {frozenset(c.recomputed) for c in cuts}
        for upper, lower in zip(cuts, cuts[1:]):
            before = set(upper.recomputed)
            added = [n for n in lower.recomputed if n not in before and self.costs[n].recompute == Recompute.COSTLY]
            if len(added) < 2:
                continue
            counts = sorted({len(added) * i // _PARTIAL_SPLITS for i in range(1, _PARTIAL_SPLITS)} - {0, len(added)})
            for count in counts:
                if len(partial) >= _MAX_PARTIAL_CUTS:
                    return partial
                cut = self.cut(lower.price, forbidden=frozenset(added[count:]))
                if frozenset(cut.recomputed) not in seen:
                    seen.add(frozenset(cut.recomputed))
                    partial.append(cut)
        return partial


def _storage_root(node: fx.Node) -> fx.Node:
    """The node whose storage a view chain aliases (a getitem is a tensor of its own)."""
    while op_class(node) == OpClass.VIEW and node.target is not operator.getitem and node.all_input_nodes:
        node = node.all_input_nodes[0]
    return node


def default_saved_bytes(info: JointGraphInfo) -> int:
    """Bytes the default partition saves: every forward value the backward reads (a view counts
    as its base; parameters and buffers excluded), nothing recomputed."""
    roots: set[fx.Node] = set()
    for node in info.required_fw:
        if any(u.op != "output" and u not in info.required_fw for u in node.users):
            if math.isfinite(value_bytes(node)):
                roots.add(_storage_root(node))
            else:  # a tuple: its items are saved (each one a getitem)
                roots.update(u for u in node.users if u.target is operator.getitem)
    total = 0
    for root in roots:
        size = value_bytes(root)
        if root not in info.static_inputs and math.isfinite(size):
            total += int(size)
    return total


def choose_cut(info: JointGraphInfo, budget_bytes: int | None, solver: str = "scipy") -> CutChoice:
    """The cut without budget pressure; under a budget it exceeds, the least-recompute-time cut
    among the priced cuts that meets it (ties: fewer bytes), or the fewest-bytes cut with a warning."""
    started = time.perf_counter()
    network = PartitionNetwork(info, solver)
    default_cut = network.cut(math.inf)
    chosen, tried, met = default_cut, 1, True
    if budget_bytes is not None and default_cut.saved_bytes > budget_bytes:
        candidates = [default_cut] + [network.cut(price) for price in network.price_grid()]
        candidates += network.partial_cuts(candidates)
        tried = len(candidates)
        feasible = [c for c in candidates if c.saved_bytes <= budget_bytes]
        if feasible:
            chosen = min(feasible, key=lambda c: (c.recompute_ns, c.saved_bytes))
        else:
            chosen = min(candidates, key=lambda c: (c.saved_bytes, c.recompute_ns))
            met = False
            warnings.warn(
                f"ait_dynamo: memory budget of {budget_bytes} bytes for saved activations cannot be met; "
                f"the best achievable saves {chosen.saved_bytes} bytes "
                f"(recomputing everything that can be recomputed; without a budget it saves "
                f"{default_cut.saved_bytes} bytes)",
                RuntimeWarning,
                stacklevel=3,
            )
    return CutChoice(
        cut=chosen,
        default_cut=default_cut,
        budget_bytes=budget_bytes,
        budget_met=met,
        cuts_tried=tried,
        solve_seconds=time.perf_counter() - started,
        costs=network.costs,
    )
