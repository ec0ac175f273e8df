"""Small helpers over FX nodes shared by the passes."""

from __future__ import annotations

import functools
from typing import Any, Container

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ait_dynamo.kernels import batch_norm_channels


aten = torch.ops.aten

# The reshapes a pass may look through (a linear layer on 3-d input is view, addmm, view)
RESHAPES = frozenset({aten.view.default, aten._unsafe_view.default, aten.reshape.default})
# single-argument activations by name (the names kernels/cutlass_gemm.py and passes/onednn_gemm.py use)
_ACTIVATIONS = {aten.relu.default: "relu", aten.silu.default: "silu", aten.sigmoid.default: "sigmoid",
                aten.tanh.default: "tanh"}


def activation_name(node: fx.Node) -> str | None:
    """``"relu"``, ``"gelu"``, ``"gelu_tanh"``, ``"silu"``, ``"sigmoid"`` or ``"tanh"`` for a node
    applying that activation to its first argument alone, else None."""
    if node.op != "call_function":
        return None
    if node.target in _ACTIVATIONS:
        return _ACTIVATIONS[node.target] if len(node.args) == 1 and not node.kwargs else None
    if node.target is aten.gelu.default:
        approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)
    return None


# Ops that write arguments their schema does not mark as written (or that have no schema):
# argument positions. SyncBatchNorm's statistics op and our channel statistics update the running
# mean and variance in place (passes/batch_norm_split.py uses them).
HIDDEN_WRITES: dict[Any, tuple[int, ...]] = {torch.ops.aten.batch_norm_gather_stats_with_counts.default: (3, 4),
                                             batch_norm_channels.channel_statistics: (1, 2)}
# Python functions the graph calls whose results are new tensors, never views of their inputs
FRESH_RESULTS = frozenset({batch_norm_channels.channel_statistics, batch_norm_channels.channel_gradient_sums})


# Schema queries, answered once per operator: the planner and the memory passes ask them of every
# node they pass (a BERT-base training step's planning asked each some 130,000 times). With the
# other changes of 0270c86 the planning went from 1.74 to 0.78 s (benchmarks/results/cpu-epyc/compile_time/).
@functools.lru_cache(maxsize=None)
def _schema_writes(target: torch._ops.OpOverload) -> bool:
    return any(arg.alias_info is not None and arg.alias_info.is_write for arg in target._schema.arguments)


@functools.lru_cache(maxsize=None)
def _seeded(target: torch._ops.OpOverload) -> bool:
    return torch.Tag.nondeterministic_seeded in target.tags


def is_mutating(node: fx.Node) -> bool:
    """True for an op that writes one of its inputs (``copy_``, ``add_``, ``set_``...)."""
    target = node.target
    if target in HIDDEN_WRITES:
        return True
    if isinstance(target, torch._ops.OpOverload):
        return _schema_writes(target)
    return node.op == "call_function" and node.is_impure()


def written_inputs(node: fx.Node) -> list[fx.Node]:
    """The graph values a mutating op writes (all its inputs where the schema cannot say)."""
    target = node.target
    if target in HIDDEN_WRITES:
        positions = HIDDEN_WRITES[target]
    elif isinstance(target, torch._ops.OpOverload):
        positions = tuple(i for i, arg in enumerate(target._schema.arguments)
                          if arg.alias_info is not None and arg.alias_info.is_write)
    else:
        return list(node.all_input_nodes)
    written = [node.args[i] for i in positions if i < len(node.args)]
    if isinstance(target, torch._ops.OpOverload):
        names = [target._schema.arguments[i].name for i in positions]
        written += [node.kwargs[name] for name in names if name in node.kwargs]
    flat = [item for value in written for item in (value if isinstance(value, (list, tuple)) else [value])]
    return [value for value in flat if isinstance(value, fx.Node)]  # a foreach op writes a list


# Ops whose schema declares a fresh result but that return a view of their input at run time:
# ``_unsafe_view`` (AOTAutograd's reshape of a value it knows to be unaliased). Missed, a kernel
# output read later only through its ``_unsafe_view`` counted as dead at its last direct use, and a
# later kernel took its buffer (kernels/slots.py): a Hugging Face BERT training step's key and
# value weight gradients came out wrong (relative error 4e3, CPU interpreter, attention explicit).
_UNANNOTATED_VIEWS = frozenset({torch.ops.aten._unsafe_view.default})


def may_alias_input(node: fx.Node) -> bool:
    """True for a call whose result may share storage with an input: an op overload with an
    aliasing return (views, reshape, ...) or one of ``_UNANNOTATED_VIEWS``, or any other
    Python-level call."""
    if node.op != "call_function":
        return False
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target in _UNANNOTATED_VIEWS or any(r.alias_info is not None for r in target._schema.returns)
    return target not in FRESH_RESULTS


def is_view_op(target: Any) -> bool:
    """An op overload that returns one view of its input and writes nothing (``view``, ``t``,
    ``select``, ``split`` ...), or one of ``_UNANNOTATED_VIEWS``."""
    if not isinstance(target, torch._ops.OpOverload):
        return False
    if target in _UNANNOTATED_VIEWS:
        return True
    schema = target._schema
    if schema.is_mutable or len(schema.returns) != 1 or torch.Tag.inplace_view in target.tags:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


def has_static_layout(value: Any) -> bool:
    """A strided tensor whose sizes, strides and storage offset are plain ints: checks on them
    add no guard on symbols."""
    if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
        return False
    return all(isinstance(v, int) for v in (*value.shape, *value.stride(), value.storage_offset()))


def is_random(node: fx.Node) -> bool:
    """True for an op whose result depends on the RNG state (two calls differ)."""
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and _seeded(target)


def meta_value(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def bound_arguments(node: fx.Node) -> dict[str, Any]:
    """An op node's arguments by schema name, positional and keyword, defaults filled in."""
    bound: dict[str, Any] = {}
    for index, spec in enumerate(node.target._schema.arguments):
        if index < len(node.args):
            bound[spec.name] = node.args[index]
        elif spec.name in node.kwargs:
            bound[spec.name] = node.kwargs[spec.name]
        elif spec.has_default_value():
            bound[spec.name] = spec.default_value
    return bound


def channel_shape(channels: Any, rank: int) -> list[int]:
    """``[1, C, 1, ...]``: the shape a per-channel vector of ``channels`` elements is viewed as, to
    broadcast over a rank-``rank`` activation. A symbolic channel count is written ``-1`` (the
    vector's only dim): a raw SymInt in a node's arguments is no value the wrapper can print."""
    return [1, channels if isinstance(channels, int) else -1] + [1] * (rank - 2)


def same_tensor_layout(a: Any, b: Any) -> bool:
    """Provably the same dtype, device, shape and strides (no guard is added for symbolic sizes)."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.dtype != b.dtype or a.device != b.device or a.dim() != b.dim() or a.layout != b.layout:
        return False
    if a.layout != torch.strided:
        return False
    pairs = list(zip(a.shape, b.shape)) + list(zip(a.stride(), b.stride()))
    return all(statically_known_true(x == y) for x, y in pairs)


def count_ops(gm: fx.GraphModule) -> int:
    """Calls in a graph (functions, methods, submodules): what ``min_acc_module_size`` counts."""
    return sum(node.op in ("call_function", "call_method", "call_module") for node in gm.graph.nodes)


def mutated_placeholders(graph: fx.Graph, skip: Container[fx.Node] = frozenset()) -> set[fx.Node]:
    """The placeholders that an op of ``graph`` writes to, directly or through a view; the writes
    of the ops in ``skip`` do not count (the partitioner asks about the forward's writes only)."""
    written: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "call_function" and node not in skip and is_mutating(node):
            written.update(written_inputs(node))
    mutated: set[fx.Node] = set()
    for placeholder in (n for n in graph.nodes if n.op == "placeholder"):
        aliases, frontier = {placeholder}, [placeholder]
        while frontier:
            for user in frontier.pop().users:
                if user not in aliases and may_alias_input(user) and not is_mutating(user):
                    aliases.add(user)
                    frontier.append(user)
        if aliases & written:
            mutated.add(placeholder)
    return mutated


def random_like(meta: torch.Tensor) -> torch.Tensor:
    """A real tensor with ``meta``'s sizes, strides, storage offset and dtype, for timing runs at
    compile time: floating point values drawn from a normal distribution, others zero. It is
    filled through its storage, since broadcast (stride-0) operands share elements, which
    ``normal_`` refuses to write. The values come from a generator of its own: drawing from the
    global one would move the user's random stream at compile time (a training loop drawing its
    batches after the first, compiling call then saw other batches than eager: DDP parameters
    7e-4 apart on the CPU where GEMMs were timed)."""
    extent = 1 + sum((s - 1) * st for s, st in zip(meta.shape, meta.stride())) if meta.numel() else 0
    storage = torch.empty(extent + meta.storage_offset(), dtype=meta.dtype, device=meta.device)
    if meta.dtype.is_floating_point:
        generator = torch.Generator(device=storage.device)
        generator.manual_seed(0)
        storage.normal_(generator=generator)
    else:
        storage.zero_()
    return storage.as_strided(tuple(meta.shape), tuple(meta.stride()), meta.storage_offset())


def real_tensors() -> Any:
    """A context in which new tensors are real even if the compiler runs inside a fake mode
    (Dynamo's, during ``torch.compile``): measurements on the device need them."""
    try:
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        return unset_fake_temporarily()
    except ImportError:  # pragma: no cover - older torch
        import contextlib

        return contextlib.nullcontext()


def fake_result(target: Any, args: tuple, kwargs: dict | None = None, like: Any = None) -> Any:
    """The meta value of a node ``target(*args, **kwargs)`` would add: the op run on the traced
    (fake) values of the node arguments, in their fake mode (or ``like``'s, a fake tensor of the
    graph, for an op without tensor arguments); ``None`` where there is none."""
    from torch._guards import detect_fake_mode
    from torch.utils._pytree import tree_leaves

    args, kwargs = fx.node.map_arg((args, kwargs or {}), lambda n: n.meta.get("val"))
    fake_mode = detect_fake_mode([v for v in tree_leaves((args, kwargs, like)) if isinstance(v, torch.Tensor)])
    if fake_mode is None:
        return None
    with fake_mode:
        return target(*args, **kwargs)


def copy_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy whose graph a pass may rewrite while the original stays intact (for the fallback
    of a failed compile, for timing a rewrite against the graph as it was)."""
    graph = fx.Graph(owning_module=gm, tracer_cls=gm.graph._tracer_cls)
    copied = graph.graph_copy(gm.graph, {}, return_output_node=True)
    if copied is not None:
        result, old_output = copied  # type: ignore[misc]
        graph.output(result, type_expr=old_output.type).meta = dict(old_output.meta)
    graph._codegen = gm.graph._codegen
    copy = fx.GraphModule(gm, graph, gm.__class__.__name__)
    copy.meta = dict(gm.meta)  # what the partitioner noted (how many outputs are the caller's: USER_OUTPUTS_META)
    return copy
