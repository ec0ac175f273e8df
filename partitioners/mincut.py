"""``min_cut_rematerialization_partition``: our partition function for AOTAutograd.

Usable wherever functorch's is (``aot_function(..., partition_fn=...)``): same positional
arguments and keywords. The choice of saved values is ours (``flow_cut.py``: a flow network over
the joint graph with byte capacities, our cost model, an optional memory budget); building the
forward and backward modules from that choice reuses functorch's graph extraction.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import itertools
import logging
import warnings
from typing import Any

from torch import fx
from torch._functorch import partitioners as functorch_partitioners

from ait_dynamo.partitioners.flow_cut import choose_cut, default_saved_bytes
from ait_dynamo.partitioners.graph_info import analyze_joint_graph, is_symbolic_node, is_tensor_node
from ait_dynamo.partitioners.schedule import schedule_recomputation_late
from ait_dynamo.partitioners.report import PartitionReport, parameter_storages, publish, saved_bytes_of, saved_tensors
from ait_dynamo.passes.batch_norm_stats import backward_reads_no_statistics

log = logging.getLogger("ait_dynamo")

_partition_counter = itertools.count()


def resolve_budget(memory_budget: int | float | None, default_bytes: int) -> int | None:
    """Budget in bytes: an int is bytes already, a float in (0, 1] a fraction of the default
    partition's saved bytes."""
    if memory_budget is None:
        return None
    if isinstance(memory_budget, float):
        if not 0.0 < memory_budget <= 1.0:
            raise ValueError(f"memory_budget fraction must be in (0, 1], got {memory_budget}")
        return int(memory_budget * default_bytes)
    return int(memory_budget)


def _copy_joint(joint_module: fx.GraphModule) -> fx.GraphModule:
    graph = fx.Graph(owning_module=joint_module)
    output = graph.graph_copy(joint_module.graph, {}, return_output_node=True)
    result, old_output = output  # type: ignore[misc]
    graph.output(result, type_expr=old_output.type).meta = dict(old_output.meta)
    graph._codegen = joint_module.graph._codegen
    return fx.GraphModule(joint_module, graph, joint_module.__class__.__name__)


def _prepare_joint(joint_module: fx.GraphModule) -> None:
    """Say which values must be saved; drop dead code. (No CSE here: the compile pipeline runs it
    on the forward and backward graphs, and on the joint graph it changed no partition we measured
    while costing half the partition time.)"""
    joint_module.graph.eliminate_dead_code()
    # Training batch norm's backward is given no running statistics (it never reads them in
    # training mode), so that the forward can update the buffers in place (passes/batch_norm_stats.py).
    if backward_reads_no_statistics(joint_module):
        joint_module.recompile()
    # Effectful ops, collectives and inputs mutated in the backward must be computed in the
    # forward and saved: functorch marks them (node.meta["recompute"] = MUST_SAVE), our cost
    # model honours the mark.
    for name in ("force_save_collectives", "force_save_effectful_ops", "force_save_bw_mutation_src"):
        marker = getattr(functorch_partitioners, name, None)
        if marker is not None:
            marker(joint_module)


def _call_with_known_keywords(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a functorch helper with the keywords its signature (in this torch version) accepts."""
    parameters = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in kwargs.items() if k in parameters})


def _extract_modules(
    joint_module: fx.GraphModule, saved: list[fx.Node], num_fwd_outputs: int, static_nodes: list[fx.Node]
) -> tuple[fx.GraphModule, fx.GraphModule]:
    saved_values = [n for n in saved if is_tensor_node(n)]
    saved_sym_nodes = [n for n in saved if is_symbolic_node(n)]
    try:
        from torch.utils._ordered_set import OrderedSet

        static_set: Any = OrderedSet(static_nodes)
    except ImportError:  # pragma: no cover - older torch
        static_set = set(static_nodes)
    # Lazy graph modules generate their Python code on first use: our compiler reads the graph,
    # so the two modules' code is usually never generated at all.
    with _lazy_graph_modules():
        fw_module, bw_module = _call_with_known_keywords(
            functorch_partitioners._extract_fwd_bwd_modules,
            joint_module,
            saved_values,
            saved_sym_nodes=saved_sym_nodes,
            saved_opaque_nodes=[],
            num_fwd_outputs=num_fwd_outputs,
            static_lifetime_input_nodes=static_set,
        )
        return fw_module, schedule_recomputation_late(bw_module)


def _lazy_graph_modules() -> Any:
    try:
        from torch.fx._lazy_graph_module import _use_lazy_graph_module

        return _use_lazy_graph_module(True)
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()


def _functorch_saved_bytes(joint_copy: fx.GraphModule, num_fwd_outputs: int, static: list[int],
                           parameters: dict[int, str]) -> int | None:
    try:
        _, bw_module = functorch_partitioners.min_cut_rematerialization_partition(
            joint_copy, None, num_fwd_outputs=num_fwd_outputs, static_lifetime_input_indices=static
        )
    except Exception:  # noqa: BLE001 - the comparison is informative only
        log.debug("functorch's min-cut partitioner failed on this graph", exc_info=True)
        return None
    return saved_bytes_of(bw_module, parameters)


def min_cut_rematerialization_partition(
    joint_module: fx.GraphModule,
    _joint_inputs: Any,
    compiler: str = "inductor",
    *,
    num_fwd_outputs: int,
    static_lifetime_input_indices: list[int] | None = None,
    config: Any = None,
    memory_budget: int | float | None = None,
    solver: str = "scipy",
    compare_with_functorch: bool | None = None,
    **other_options: Any,
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Split AOTAutograd's joint graph into forward and backward graphs, saving few bytes.

    Fusible ops are recomputed in the backward when that saves bytes; compute-intensive ops and
    ops whose recompute would not fuse are saved unless ``memory_budget`` (bytes, or a fraction of
    the default partition's saved bytes; default ``config.memory_budget``) needs them recomputed.
    ``config`` is an :class:`~ait_dynamo.AitConfig` (debug dir, budget); bind it with
    ``functools.partial``. ``compare_with_functorch`` also runs functorch's partitioner on a copy
    to report its saved bytes (default: when a debug dir is set or INFO logging is on).
    Other keywords of functorch's signature (``recomputable_ops`` in older torch) are accepted and
    ignored: the cost model decides.

    Should our partitioner fail on a graph, the default partition (save what the forward computed)
    is used, with one warning: correct gradients, more memory.
    """
    if other_options:
        log.debug("min_cut_rematerialization_partition: ignoring %s", sorted(other_options))
    if memory_budget is not None:
        from ait_dynamo.config import _parse_memory_budget

        memory_budget = _parse_memory_budget("memory_budget", memory_budget)
    try:
        with _no_cyclic_gc():
            return _partition(joint_module, _joint_inputs, num_fwd_outputs, static_lifetime_input_indices, config,
                              memory_budget, solver, compare_with_functorch)
    except Exception as error:  # noqa: BLE001 - a partitioner bug must cost memory, not the program
        warnings.warn(
            f"ait_dynamo: min-cut partitioner failed ({type(error).__name__}: {error}); "
            "using the default partition (saves every forward value the backward reads)",
            RuntimeWarning,
            stacklevel=2,
        )
        log.debug("partitioner failure", exc_info=True)
        return _call_with_known_keywords(
            functorch_partitioners.default_partition,
            joint_module,  # our clean-ups (dead code removed, must-save marks) keep it valid
            _joint_inputs,
            num_fwd_outputs=num_fwd_outputs,
            static_lifetime_input_indices=list(static_lifetime_input_indices or []),
        )


@contextlib.contextmanager
def _no_cyclic_gc() -> Any:
    """Pause the cyclic garbage collector while graphs are copied: the tens of thousands of FX
    objects made on a large joint graph trigger full collections (24-layer graph on the 2-core
    CPU machine, ``benchmarks.partition_bench``: median 1.46 s with them, 0.97-1.18 s without)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _partition(
    joint_module: fx.GraphModule,
    _joint_inputs: Any,
    num_fwd_outputs: int,
    static_lifetime_input_indices: list[int] | None,
    config: Any,
    memory_budget: int | float | None,
    solver: str,
    compare_with_functorch: bool | None,
) -> tuple[fx.GraphModule, fx.GraphModule]:
    if config is None:
        from ait_dynamo.config import AitConfig

        config = AitConfig.create()
    budget = memory_budget if memory_budget is not None else getattr(config, "memory_budget", None)
    debug_dir = getattr(config, "debug_dir", None)
    if compare_with_functorch is None:
        compare_with_functorch = bool(debug_dir) or log.isEnabledFor(logging.INFO)
    static = list(static_lifetime_input_indices or [])
    joint_copy = _copy_joint(joint_module) if compare_with_functorch else None

    _prepare_joint(joint_module)
    info = analyze_joint_graph(joint_module, num_fwd_outputs, static)
    if not info.required_bw:
        # Nothing needs a gradient: the default partition is exact and trivially optimal.
        return _call_with_known_keywords(
            functorch_partitioners.default_partition,
            joint_module,
            _joint_inputs,
            num_fwd_outputs=num_fwd_outputs,
            static_lifetime_input_indices=static,
        )
    default_bytes = default_saved_bytes(info)
    budget_bytes = resolve_budget(budget, default_bytes)
    choice = choose_cut(info, budget_bytes, solver)
    static_nodes = [n for n in info.inputs if n in info.static_inputs]
    fw_module, bw_module = _extract_modules(joint_module, choice.cut.saved, num_fwd_outputs, static_nodes)

    parameters = parameter_storages(static_nodes)
    functorch_bytes = None
    if joint_copy is not None:
        functorch_bytes = _functorch_saved_bytes(joint_copy, num_fwd_outputs, static, parameters)
    costs = choice.costs
    report = PartitionReport(
        name=f"partition_{next(_partition_counter):03d}",
        saved=saved_tensors(bw_module, parameters),
        saved_bytes=saved_bytes_of(bw_module, parameters),
        default_bytes=default_bytes,
        functorch_bytes=functorch_bytes,
        recomputed=[f"{n.name} = {n.target} ({costs[n].recompute.value})" for n in choice.cut.recomputed],
        budget_bytes=budget_bytes,
        budget_met=choice.budget_met,
        cuts_tried=choice.cuts_tried,
        solve_seconds=choice.solve_seconds,
        estimated_recompute_us=choice.cut.recompute_ns / 1e3,
        solver=solver,
    )
    publish(report, debug_dir)
    return fw_module, bw_module
