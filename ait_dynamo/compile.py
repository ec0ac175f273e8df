"""The compile driver: one aten FX graph → one boxed callable.

passes → plan → generated wrapper module → on-disk cache → ``call(args)``. Anything that fails
while compiling falls back to running the graph as it came, with one warning: the user's program
keeps running and stays correct.
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from typing import Any, Callable, Sequence

import torch.utils._pytree
from torch import fx

from ait_dynamo import cuda_graphs, faults, metrics
from ait_dynamo._version import __version__
from ait_dynamo.cache import load_module
from ait_dynamo.config import AitConfig
from ait_dynamo.debug import DebugDir
from ait_dynamo.kernels import autotune, gemm_tuning, op_table
from ait_dynamo.kernels.precompile import precompile
from ait_dynamo.kernels.wrapper import generate_wrapper
from ait_dynamo.fusion_report import build_report, emit_report
from ait_dynamo.partitioners import USER_OUTPUTS_META
from ait_dynamo.passes import layout
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.graph_utils import copy_graph_module, may_alias_input, mutated_placeholders
from ait_dynamo.passes.plan import FusionGroup
from ait_dynamo.passes.pipeline import run_passes
from ait_dynamo.passes.sizes import untrusted_sizes
from ait_dynamo.verify import Verifier

log = logging.getLogger("ait_dynamo")

_graph_counter = itertools.count()

BoxedCallable = Callable[[list[Any]], Any]


def _boxed(gm: fx.GraphModule) -> BoxedCallable:
    def run_graph(args: list[Any]) -> Any:
        values = list(args)
        args.clear()
        return gm(*values)

    run_graph._boxed_call = True  # type: ignore[attr-defined]
    return run_graph


def guess_graph_kind(gm: fx.GraphModule) -> str:
    """AOTAutograd names backward inputs ``tangents_*``; forward and inference inputs ``primals_*``
    / ``arg*``. Used only to label graphs compiled through the public ``ait_compile``."""
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    return "backward" if any(name.startswith("tangents") for name in names) else "forward"


def mutated_input_indices(gm: fx.GraphModule) -> list[int]:
    """Indices of the placeholders that an op of ``gm`` writes to, directly or through a view."""
    written = mutated_placeholders(gm.graph)
    return [index for index, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder") if node in written]


def outputs_aliasing_inputs(gm: fx.GraphModule) -> list[int]:
    """Indices of the outputs that may share storage with an input: an input itself, or reached
    from one through ops whose result may alias their argument (views, in-place ops)."""
    (output,) = [n for n in gm.graph.nodes if n.op == "output"]
    result = []
    for index, value in enumerate(torch.utils._pytree.tree_leaves(output.args[0])):
        stack, seen = [value] if isinstance(value, fx.Node) else [], set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.op == "placeholder":
                result.append(index)
                break
            if may_alias_input(node):
                stack.extend(node.all_input_nodes)
    return result


def _graphed(compiled: BoxedCallable, gm: fx.GraphModule, name: str, kind: str, config: AitConfig,
             graph_pair: "cuda_graphs.GraphPair | None", source: str | None) -> BoxedCallable:
    if not config.cuda_graphs or kind not in cuda_graphs.GRAPHED_KINDS:
        return compiled
    if source is not None and "next_seed(" in source:
        warnings.warn(
            f"ait_dynamo: {name} runs without a CUDA graph: its kernels draw Philox seeds on the host "
            "(fallback_random=False), and a replay would repeat them; use fallback_random=True",
            RuntimeWarning,
            stacklevel=3,
        )
        return compiled
    return cuda_graphs.wrap(compiled, name, kind, graph_pair, gm.meta.get(USER_OUTPUTS_META),
                            mutated_input_indices(gm), outputs_aliasing_inputs(gm))


def compile_graph(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    config: AitConfig,
    kind: str = "graph",
    graph_pair: "cuda_graphs.GraphPair | None" = None,
    rewrites: Sequence[str] = (),
) -> BoxedCallable:
    """Compile one aten graph; returns a boxed callable (``fn(list_of_args)``). With
    ``config.cuda_graphs`` it replays CUDA graphs; graphs of one ``graph_pair`` share memory."""
    started = time.perf_counter()
    name = f"graph_{next(_graph_counter):03d}_{kind}"
    record = metrics.GraphRecord(name=name, kind=kind, rewrites=list(rewrites))
    debug = DebugDir(config.debug_dir, name)
    debug.write("00-input.txt", gm.print_readable(print_output=False))
    untrusted = untrusted_sizes(gm.graph)
    try:
        if untrusted:  # not a failure: code specialised on those sizes would be wrong for other values
            ops = ", ".join(sorted({str(n.target) for n in untrusted}))
            record.aten_reason = f"sizes depend on tensor values ({ops}) but were recorded as fixed numbers"
            log.info("%s runs through ATen as given: %s", name, record.aten_reason)
            debug.write("aten_reason.txt", record.aten_reason + "\n")
            record.externs = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
            compiled, source = _boxed(gm), None
        else:
            with faults.compiling(name):
                compiled, source = _compile(gm, example_inputs, config, name, debug, record)
    except Exception as error:  # noqa: BLE001 - any compile failure must degrade, not crash
        message = f"ait_dynamo: compiling {name} failed ({type(error).__name__}: {error}); running it through ATen"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log.debug("compile failure of %s", name, exc_info=True)
        record.fallback_reason = f"{type(error).__name__}: {error}"
        record.externs = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        compiled = _boxed(gm)
        source = None
    compiled = _graphed(compiled, gm, name, kind, config, graph_pair, source)
    record.compile_seconds = time.perf_counter() - started
    metrics.record(record)
    log.info(
        "compiled %s: %d kernels, %d extern calls%s in %.1f ms",
        name,
        len(record.kernels),
        len(record.externs),
        " (cache hit)" if record.cache_hit else "",
        record.compile_seconds * 1e3,
    )
    return compiled


def _compile(gm: fx.GraphModule, example_inputs: Sequence[Any], config: AitConfig, name: str, debug: DebugDir,
             record: metrics.GraphRecord) -> tuple[BoxedCallable, str]:
    """passes → plan → report → generated module → loaded (cached) → ``call``."""
    work = copy_graph_module(gm)
    layout.adopt_input_strides(work, example_inputs)  # a backward's saved values, as the forward laid them out
    work = run_passes(work, config, dump=debug.write if debug else None)
    decision = work.meta.get(layout.LAYOUT_META)
    record.layout = "" if decision is None else f"{'channels-last' if decision.channels_last else 'contiguous'}: {decision.reason}"
    record.layout_copies = layout.layout_copies(work)
    record.weight_copies = layout.weight_copies(work)
    record.convolutions = layout.channels_last_convolutions(work)
    plan, refusals = build_plan(work, config, _gemm_choices(work, config))
    record.refused = dict(refusals)
    debug.write("plan.txt", plan.describe())
    report = build_report(name, plan, refusals, record.rewrites)
    emit_report(report, debug)
    if config.autotune:
        autotune.set_directory(config.cache_dir)
    generated = generate_wrapper(plan, work, __version__, autotune=config.autotune, verify=config.verify)
    debug.write("module.py", generated.source)
    module, record.cache_hit = load_module(generated.source, config.cache_dir)
    if config.compile_workers and not record.cache_hit:
        precompile(module, generated.kernels, config.compile_workers)
    groups = [s for s in plan.steps if isinstance(s, FusionGroup)]
    verifier = None
    if config.verify and groups:
        verifier = Verifier(
            name,
            ops={g.name: [str(n.target) for n in g.nodes] for g in groups},
            random_groups={g.name for g in groups if any(n.target in op_table.RANDOM_UNIFORM for n in g.nodes)},
            record=record, report=report, debug=debug,
        )
    compiled: BoxedCallable = (module.make_call(generated.constants, verifier) if verifier is not None
                               else module.make_call(generated.constants))
    record.externs = list(generated.aten_externs)
    record.kernels = [kernel.name for kernel in generated.kernels]
    record.fused_ops = [str(n.target) for g in groups for n in g.nodes]
    layout.report_output_strides(work)  # last: a compile that fails after it would return other strides
    return compiled, generated.source


def _gemm_choices(work: fx.GraphModule, config: AitConfig) -> dict[str, bool]:
    """GEMM node → the template measured faster (kernels/gemm_tuning.py); empty where nothing is
    measured (then the rule of kernels/gemm_choice.py decides)."""
    if not gemm_tuning.wanted(config):
        return {}
    autotune.set_directory(config.cache_dir)
    return gemm_tuning.choose_gemm_backends(work, config, lambda measured: build_plan(work, config, measured))


def ait_compile(gm: fx.GraphModule, example_inputs: Sequence[Any], **options: Any) -> BoxedCallable:
    """Compile an aten FX graph with the ait backend.

    Usable as ``fw_compiler`` / ``bw_compiler`` / ``inference_compiler`` of
    ``functorch.compile.aot_function`` and ``aot_module``; the result follows AOTAutograd's boxed
    calling convention (it takes one list of arguments). ``options`` are :class:`AitConfig` fields.
    """
    config = options.pop("config", None) or AitConfig.create()
    if options:
        config = config.replace(**options)
    return compile_graph(gm, example_inputs, config, kind=guess_graph_kind(gm))
