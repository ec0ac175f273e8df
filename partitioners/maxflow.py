"""Minimum s-t cut of a small capacitated digraph, by a compiled max-flow solver.

:class:`FlowNetwork` collects edges with float capacities (``math.inf`` for edges that must not be
cut). :func:`min_cut_source_side` solves it with scipy's ``maximum_flow`` (Dinic, compiled) on
int32 capacities, or with networkx (pure Python) when asked; both return the vertices on the
source side of a minimum cut (those reachable from the source in the residual graph).

On a 24-layer transformer joint graph (``benchmarks/partition_bench.py``) scipy is the faster one
by a wide margin, so it is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INT32_MAX = 2**31 - 1
# Finite capacities are scaled so that their sum stays below this; "infinite" edges get INT32_MAX,
# which therefore always exceeds any cut made of finite edges.
_FINITE_TOTAL_LIMIT = 2**30


@dataclass
class FlowNetwork:
    """Vertices are small integers; ``SOURCE`` is 0 and ``SINK`` is 1."""

    SOURCE = 0
    SINK = 1
    num_vertices: int = 2
    tails: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    capacities: list[float] = field(default_factory=list)

    def add_vertex(self) -> int:
        self.num_vertices += 1
        return self.num_vertices - 1

    def add_edge(self, tail: int, head: int, capacity: float) -> None:
        if capacity <= 0 or tail == head:
            return  # a zero edge never carries flow: leaving it out changes no cut
        self.tails.append(tail)
        self.heads.append(head)
        self.capacities.append(capacity)


def _int32_capacities(capacities: list[float]) -> np.ndarray:
    values = np.asarray(capacities, dtype=np.float64)
    finite = np.isfinite(values)
    total = float(values[finite].sum()) if finite.any() else 0.0
    scale = 1.0 if total < _FINITE_TOTAL_LIMIT else _FINITE_TOTAL_LIMIT / total
    scaled = np.where(finite, np.ceil(np.where(finite, values, 0.0) * scale), INT32_MAX)
    return scaled.astype(np.int32)


class UnboundedCutError(RuntimeError):
    """Every cut of the network crosses an infinite edge (a value the backward needs can neither
    be saved nor recomputed)."""


def _sink_side_scipy(capacity, flow, n: int) -> set[int]:
    from scipy.sparse.csgraph import breadth_first_order

    # The flow is skew-symmetric, so capacity - flow is the residual capacity in both directions.
    residual = (capacity.astype(np.int64) - flow.astype(np.int64)).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    # Vertices that still reach the sink through residual edges: BFS from the sink, edges reversed.
    reached = breadth_first_order(residual.T.tocsr(), FlowNetwork.SINK, directed=True, return_predecessors=False)
    return {int(v) for v in reached}


def _solve_scipy(network: FlowNetwork) -> set[int]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    n = network.num_vertices
    capacity = csr_matrix(
        (_int32_capacities(network.capacities).astype(np.int64), (np.asarray(network.tails), np.asarray(network.heads))),
        shape=(n, n),
        dtype=np.int64,
    )
    capacity.sum_duplicates()  # parallel edges add up (in int64: an infinite one stays the largest)
    np.minimum(capacity.data, INT32_MAX, out=capacity.data)
    capacity = capacity.astype(np.int32)
    result = maximum_flow(capacity, FlowNetwork.SOURCE, FlowNetwork.SINK, method="dinic")
    if result.flow_value >= INT32_MAX:
        raise UnboundedCutError("the min cut crosses an infinite edge")
    sink_side = _sink_side_scipy(capacity, result.flow, n)
    return set(range(n)) - sink_side


def _solve_networkx(network: FlowNetwork) -> set[int]:
    import networkx as nx
    from networkx.algorithms.flow import preflow_push

    graph = nx.DiGraph()
    graph.add_nodes_from(range(network.num_vertices))
    for tail, head, capacity in zip(network.tails, network.heads, network.capacities):
        if graph.has_edge(tail, head):
            existing = graph[tail][head].get("capacity", math.inf)
            graph[tail][head]["capacity"] = existing + capacity
        elif math.isfinite(capacity):
            graph.add_edge(tail, head, capacity=capacity)
        else:
            graph.add_edge(tail, head)  # no capacity attribute: infinite for networkx
    try:
        residual = preflow_push(graph, FlowNetwork.SOURCE, FlowNetwork.SINK)
    except nx.NetworkXUnbounded as error:
        raise UnboundedCutError(str(error)) from None
    sink_side = {FlowNetwork.SINK}
    stack = [FlowNetwork.SINK]
    while stack:
        head = stack.pop()
        for tail, _, data in residual.in_edges(head, data=True):
            if tail not in sink_side and data["capacity"] - data["flow"] > 0:
                sink_side.add(tail)
                stack.append(tail)
    return set(range(network.num_vertices)) - sink_side


SOLVERS = {"scipy": _solve_scipy, "networkx": _solve_networkx}


def min_cut_source_side(network: FlowNetwork, solver: str = "scipy") -> set[int]:
    """Vertices on the source side of a minimum cut of ``network``: of all minimum cuts, the one
    whose source side is largest (everything that cannot reach the sink in the residual graph),
    so among equally small cuts the partitioner recomputes the least."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown max-flow solver {solver!r}; valid: {', '.join(SOLVERS)}")
    return SOLVERS[solver](network)
