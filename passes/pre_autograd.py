"""Rewrites before AOTAutograd: on the Dynamo graph, traced again into pre-dispatch aten IR.

Some rewrites must change what AOTAutograd differentiates: attention replaced by
``scaled_dot_product_attention`` should get SDPA's own backward, not the backward of the ops it
replaced. ``make_fx(pre_dispatch=True)`` gives aten ops above autograd (``matmul``, ``softmax``,
``dropout``, ``linear`` stay whole), on Dynamo's fake tensors and symbols, so the passes of
``pipeline.PRE_AUTOGRAD_PASSES`` see one spelling per op. The rewritten graph then goes to
AOTAutograd in place of Dynamo's, carrying Dynamo's metadata (parameter sources, static inputs).

Only graphs a rewrite may apply to are traced again (a look at the Dynamo graph's ops), and
graphs whose Dynamo form holds what a second trace could change (autocast or grad-mode regions,
higher-order operators such as checkpointing or custom autograd functions) are left alone. If
retracing fails or no rewrite applies, Dynamo's graph goes on unchanged.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from torch import fx

log = logging.getLogger("ait_dynamo")


REWRITES_META = "ait_rewrites"  # lines: what each pre-autograd rewrite did or refused, and why
REWRITTEN_META = "ait_rewritten"  # how many subgraphs the pre-autograd rewrites replaced


def record_rewrites(gm: fx.GraphModule, lines: list[str], replaced: int) -> None:
    """What a pass of ``PRE_AUTOGRAD_PASSES`` did: its report lines, and how many subgraphs it
    replaced (none: Dynamo's graph goes on unchanged)."""
    gm.meta[REWRITES_META] = list(gm.meta.get(REWRITES_META, [])) + lines
    gm.meta[REWRITTEN_META] = gm.meta.get(REWRITTEN_META, 0) + replaced


def _target_name(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", "") or str(target)


def mentions_softmax(gm: fx.GraphModule) -> bool:
    """Whether the Dynamo graph calls a softmax (``torch.softmax``, ``F.softmax``, ``x.softmax``)
    or ``multi_head_attention_forward`` (which Dynamo keeps whole: ``nn.MultiheadAttention``)."""
    return any(node.op in ("call_function", "call_method")
               and ("softmax" in _target_name(node) or _target_name(node) == "multi_head_attention_forward")
               for node in gm.graph.nodes)


def _retrace_hazard(gm: fx.GraphModule) -> str | None:
    """Why a second trace could change the program's meaning, or ``None``."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            return f"it calls a submodule ({node.target})"
        if node.op not in ("call_function", "call_method"):
            continue
        target = node.target
        if isinstance(target, torch._ops.HigherOrderOperator):
            return f"it holds the higher-order operator {target.name()}"
        name = _target_name(node)
        if "autocast" in name or "grad_enabled" in name or name in ("_enter_autocast", "_exit_autocast"):
            return f"it changes autocast or grad mode inside the graph ({name})"
    return None


def _fake_inputs(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> list[Any]:
    """Dynamo's fake inputs (with its symbols) for the graph's placeholders."""
    from torch._guards import detect_fake_mode

    fake_mode = detect_fake_mode(example_inputs)
    if fake_mode is None:
        raise RuntimeError("no fake mode in the tracing context")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise RuntimeError("placeholders and example inputs differ in number")
    values = []
    for node, example in zip(placeholders, example_inputs):
        known = node.meta.get("example_value", node.meta.get("val"))
        if isinstance(example, torch.Tensor):
            if isinstance(known, torch._subclasses.FakeTensor) and known.fake_mode is fake_mode:
                values.append(known)
            else:
                values.append(fake_mode.from_tensor(example))
        else:
            values.append(known if known is not None else example)
    return values


def _retrace(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx

    inputs = _fake_inputs(gm, example_inputs)
    traced = make_fx(gm, pre_dispatch=True, tracing_mode="symbolic")(*inputs)
    traced.graph.eliminate_dead_code()
    traced.recompile()
    return traced


def _carry_dynamo_metadata(traced: fx.GraphModule, dynamo_gm: fx.GraphModule) -> fx.GraphModule:
    """What AOTAutograd reads from a Dynamo graph: its meta, the parameter sources, and each
    placeholder's source and Dynamo meta (static inputs, example values)."""
    for key, value in dynamo_gm.meta.items():
        traced.meta.setdefault(key, value)
    if hasattr(dynamo_gm, "_param_name_to_source"):
        traced._param_name_to_source = dynamo_gm._param_name_to_source  # type: ignore[attr-defined]
    # make_fx registers the constant tensors it met as buffers; AOTAutograd would take them for
    # the model's state (and look for their Dynamo sources): keep them plain attributes, as Dynamo does
    state = {name for name, _ in dynamo_gm.named_buffers()} | {name for name, _ in dynamo_gm.named_parameters()}
    for name in [name for name in traced._buffers if name not in state]:
        value = traced._buffers.pop(name)
        setattr(traced, name, value)
    old = [n for n in dynamo_gm.graph.nodes if n.op == "placeholder"]
    new = [n for n in traced.graph.nodes if n.op == "placeholder"]
    for before, after in zip(old, new):
        for key, value in before.meta.items():
            after.meta.setdefault(key, value)
        if hasattr(before, "_dynamo_source"):
            after._dynamo_source = before._dynamo_source  # type: ignore[attr-defined]
    return traced


def rewrite_before_autograd(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    config: Any,
    passes: list[Callable[[fx.GraphModule, Any], fx.GraphModule]],
    dump: Callable[[str, str], None] | None = None,
) -> tuple[fx.GraphModule, list[str]]:
    """(the graph AOTAutograd should see, what the rewrites did or refused)."""
    from ait_dynamo.passes.pipeline import run_passes

    if not getattr(config, "rewrite_attention", True) or not mentions_softmax(gm):
        return gm, []
    hazard = _retrace_hazard(gm)
    if hazard is not None:
        return gm, [f"attention rewrite skipped: {hazard}"]
    try:
        traced = _retrace(gm, example_inputs)
    except Exception as error:  # noqa: BLE001 - the rewrite is an optimisation: keep Dynamo's graph
        log.debug("pre-dispatch retrace failed", exc_info=True)
        return gm, [f"attention rewrite skipped: tracing the graph again failed ({type(error).__name__}: {error})"]
    if dump is not None:
        dump("00-pre_dispatch.txt", traced.print_readable(print_output=False))
    traced = run_passes(traced, config, dump=dump, passes=passes)
    lines = list(traced.meta.get(REWRITES_META, []))
    if not traced.meta.get(REWRITTEN_META):
        return gm, lines
    return _carry_dynamo_metadata(traced, gm), lines
