"""The seeds' lowering API: split a model into accelerated and eager parts.

    lowered = ait_dynamo.lower(model, example_inputs, ait_dynamo.LowerSettings(min_acc_module_size=10))
    print(lowered)          # the split: _run_on_gpu_N children run eagerly, _run_on_acc_N through ait
    out = lowered(*inputs)

As AITemplate's lowerer (seed 000) does with ``acc_tracer``: ``torch.fx`` traces the model, calls
to functions and ``nn.Module`` classes marked :func:`fallback` stay opaque leaves, torch.fx's own
splitter (``splitter_base``) groups the rest into accelerated subgraphs, and an accelerated
subgraph with fewer than ``min_acc_module_size`` ops stays eager. Each ``_run_on_acc_N`` child is
compiled with ``torch.compile(backend="ait")`` (forward and backward), with ``fallback_ops`` and
the other backend options of the settings.

Under ``torch.compile(backend="ait")``, a :func:`fallback` function or module is a graph break
(``torch.compiler.disable``): it runs exactly as in eager, whatever Python it holds, and ait
compiles the graphs before and after it. An opaque custom op would keep one graph, but it needs a
tensor-only signature and a fake implementation, which a user function (the seed's takes an
``nn.MultiheadAttention``) does not have.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from torch import fx, nn

from ait_dynamo.passes.graph_utils import count_ops

log = logging.getLogger("ait_dynamo")

ACC_PREFIX = "_run_on_acc_"
EAGER_PREFIX = "_run_on_gpu_"  # the seed's name for the parts that run in PyTorch eager

_FALLBACK_FUNCTIONS: list[Callable[..., Any]] = []
T = TypeVar("T")


def fallback(obj: T) -> T:
    """Mark a function, or an ``nn.Module`` class, to run in PyTorch eager: a leaf that
    :func:`lower` puts in a ``_run_on_gpu_N`` child, and a graph break under ``torch.compile``."""
    if isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            raise TypeError(f"ait_dynamo.fallback marks functions or nn.Module classes, not {obj.__name__}")
        obj._ait_fallback = True  # type: ignore[attr-defined]
        obj.forward = torch.compiler.disable(obj.forward)  # type: ignore[attr-defined]
        return obj
    if not callable(obj):
        raise TypeError(f"ait_dynamo.fallback marks functions or nn.Module classes, not {type(obj).__name__}")
    wrapped = torch.compiler.disable(obj)
    wrapped._ait_fallback = True  # type: ignore[attr-defined]
    _FALLBACK_FUNCTIONS.append(wrapped)
    return wrapped  # type: ignore[return-value]


def is_fallback(target: Any) -> bool:
    return bool(getattr(target, "_ait_fallback", False)) or bool(getattr(type(target), "_ait_fallback", False))


@dataclass(frozen=True)
class LowerSettings:
    """Settings of :func:`lower` (names as in AITemplate's ``LowerSettings``).

    min_acc_module_size: an accelerated subgraph with fewer ops than this stays eager.
    fallback_ops: aten ops that run through ATen inside the accelerated parts (as the option of
        ``torch.compile(backend="ait")``: ``["aten.bmm", "aten._softmax.default"]``).
    name: the lowered module's class name.
    workdir: a folder for the debug dump (the split module's code, and per accelerated child
        ait's debug dump under ``<workdir>/<name>/<child>/``); ``None`` writes nothing.
    options: other options of the ait backend (``AitConfig`` fields: ``cuda_graphs``, ...).
    """

    min_acc_module_size: int = 10
    fallback_ops: tuple[str, ...] = ()
    name: str = "ait_lowered"
    workdir: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ait_dynamo.config import AitConfig

        if isinstance(self.min_acc_module_size, bool) or not isinstance(self.min_acc_module_size, int) \
                or self.min_acc_module_size < 0:
            raise ValueError(f"LowerSettings: min_acc_module_size must be an int >= 0, got {self.min_acc_module_size!r}")
        if not self.name.isidentifier():
            raise ValueError(f"LowerSettings: name must be a Python identifier, got {self.name!r}")
        if "fallback_ops" in self.options or "min_acc_module_size" in self.options:
            raise ValueError("LowerSettings: give fallback_ops and min_acc_module_size as settings, not in options")
        checked = AitConfig.create({**self.options, "fallback_ops": list(self.fallback_ops)}, environ={})
        object.__setattr__(self, "fallback_ops", checked.fallback_ops)


class _Tracer(fx.Tracer):
    """torch.fx's tracer with :func:`fallback` functions and module classes kept as leaves."""

    def __init__(self) -> None:
        super().__init__(autowrap_functions=tuple(_FALLBACK_FUNCTIONS))

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return is_fallback(module) or super().is_leaf_module(module, qualified_name)


def _support() -> Any:
    from torch.fx.passes.operator_support import OperatorSupportBase

    class Support(OperatorSupportBase):
        """Everything is accelerated but the calls marked :func:`fallback`."""

        def is_node_supported(self, submodules: Mapping[str, nn.Module], node: fx.Node) -> bool:
            if node.op == "call_function":
                return not is_fallback(node.target)
            if node.op == "call_module":
                return not is_fallback(submodules[str(node.target)])
            return True

    return Support()


def lower(model: nn.Module, example_inputs: Sequence[Any], settings: LowerSettings | None = None) -> fx.GraphModule:
    """Split ``model`` into ``_run_on_gpu_N`` (eager) and ``_run_on_acc_N`` (ait) children, in
    graph order (see the module doc); returns the split ``torch.fx.GraphModule``."""
    from torch.fx.passes.splitter_base import _SplitterBase, _SplitterSettingBase

    settings = settings or LowerSettings()
    if not isinstance(model, nn.Module):
        raise TypeError(f"ait_dynamo.lower takes an nn.Module, got {type(model).__name__}")
    graph = _Tracer().trace(model)
    traced = fx.GraphModule(model, graph, settings.name)
    splitter_settings = _SplitterSettingBase(min_acc_module_size=settings.min_acc_module_size, allow_non_tensor=True)
    splitter = _SplitterBase(traced, tuple(example_inputs), _support(), splitter_settings,
                             non_acc_submodule_name=EAGER_PREFIX)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the splitter reports by printing
        split = splitter()
    for line in printed.getvalue().splitlines():
        log.info("lower %s: %s", settings.name, line)
    split.__class__.__name__ = settings.name
    options = dict(settings.options)
    if settings.fallback_ops:
        options["fallback_ops"] = list(settings.fallback_ops)
    for name, child in list(split.named_children()):
        if name.startswith(ACC_PREFIX):
            child_options = dict(options)
            if settings.workdir:
                child_options["debug_dir"] = os.path.join(settings.workdir, settings.name, name)
            setattr(split, name, AcceleratedPart(child, child_options))
    if settings.workdir:
        os.makedirs(os.path.join(settings.workdir, settings.name), exist_ok=True)
        with open(os.path.join(settings.workdir, settings.name, "lowered.txt"), "w", encoding="utf-8") as file:
            file.write(describe(split))
    return split


class AcceleratedPart(nn.Module):
    """A ``_run_on_acc_N`` child: its traced graph (``graph_module``), run through
    ``torch.compile(backend="ait")``."""

    def __init__(self, graph_module: fx.GraphModule, options: Mapping[str, Any]):
        super().__init__()
        self.graph_module = graph_module
        self.ops = count_ops(graph_module)
        # not a registered submodule: the compiled wrapper would list the same parameters twice
        object.__setattr__(self, "_compiled", torch.compile(graph_module, backend="ait", options=dict(options)))

    def forward(self, *args: Any) -> Any:
        return self._compiled(*args)

    def extra_repr(self) -> str:
        return f"compiled by ait, {self.ops} ops"


def describe(lowered: fx.GraphModule) -> str:
    """The split, child by child: what runs where."""
    lines = [f"{type(lowered).__name__}: {len(list(lowered.named_children()))} children, in graph order"]
    for name, child in lowered.named_children():
        where = "ait" if name.startswith(ACC_PREFIX) else "eager"
        module = child.graph_module if isinstance(child, AcceleratedPart) else child
        ops = [str(n.target) if n.op != "call_module" else f"{n.target} ({type(module.get_submodule(str(n.target))).__name__})"
               for n in module.graph.nodes if n.op in ("call_function", "call_method", "call_module")] \
            if isinstance(module, fx.GraphModule) else []
        lines.append(f"  {name} ({where}): {len(ops)} ops: {', '.join(ops)}")
    lines.append("")
    lines.append(lowered.code)
    return "\n".join(lines)
