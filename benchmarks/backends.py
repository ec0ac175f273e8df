"""The backends the harness compares, and the steps (one benchmark iteration) each mode runs.

``eager`` runs the module as written; ``inductor`` and ``inductor-reduce-overhead`` are
``torch.compile``'s default backend without and with CUDA graphs; ``ait`` is this project
(``ait-cudagraphs``: with ``mode="reduce-overhead"``; ``ait-lower``: seed 000's lowering API). Each
compiled backend gets ``dynamic=False``: every batch size is its own static-shape compile, as
AITemplate's per-batch-size engines in the seed tables.

Every subcommand names backends the same way: ``name[+option=value...]``, where the options are
ait's (``ait+partitioner=default``, ``ait-cudagraphs+memory_budget=0.25``), checked by
``AitConfig`` when the command line is read.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from benchmarks.workload_types import Built


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    compile: Callable[[Callable[..., Any], Built, dict[str, Any]], Callable[..., Any]] | None  # None = eager
    needs_cuda: bool = False
    cudagraphs: bool = False  # steps call cudagraph_mark_step_begin()
    takes_options: bool = False  # ait's options after a "+" (the Inductor backends take none)

    @property
    def compiled(self) -> bool:
        return self.compile is not None


def _inductor(fn: Callable[..., Any], built: Built, extra: dict[str, Any]) -> Callable[..., Any]:
    return torch.compile(fn, backend="inductor", dynamic=False)


def _inductor_reduce_overhead(fn: Callable[..., Any], built: Built, extra: dict[str, Any]) -> Callable[..., Any]:
    return torch.compile(fn, backend="inductor", mode="reduce-overhead", dynamic=False)


def _inductor_max_autotune(fn: Callable[..., Any], built: Built, extra: dict[str, Any]) -> Callable[..., Any]:
    # Inductor's GEMM autotuning (Triton templates vs cuBLAS) without CUDA graphs: what ait's
    # gemm_backends=aten,triton with autotune=True is compared against (issue 14's compile target)
    return torch.compile(fn, backend="inductor", mode="max-autotune-no-cudagraphs", dynamic=False)


def _ait(fn: Callable[..., Any], built: Built, extra: dict[str, Any]) -> Callable[..., Any]:
    options = {**built.ait_options, **extra}
    return torch.compile(fn, backend="ait", options=options, dynamic=False)


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("eager", "PyTorch eager", None),
        Backend("inductor", 'torch.compile(backend="inductor")', _inductor),
        Backend("inductor-reduce-overhead", 'torch.compile(mode="reduce-overhead"): Inductor + CUDA graphs',
                _inductor_reduce_overhead, needs_cuda=True, cudagraphs=True),
        Backend("inductor-max-autotune", 'torch.compile(mode="max-autotune-no-cudagraphs")', _inductor_max_autotune,
                needs_cuda=True),
        Backend("ait", 'torch.compile(backend="ait")', _ait, takes_options=True),
    )
}


def _ait_lower(fn: Callable[..., Any], built: Built, extra: dict[str, Any]) -> Callable[..., Any]:
    """Seed 000's way: ``ait_dynamo.lower`` splits the module into eager and ait children."""
    import ait_dynamo

    if not isinstance(fn, torch.nn.Module):
        raise TypeError("ait-lower lowers nn.Modules")
    options = {**built.ait_options, **extra}
    fallback_ops = tuple(options.pop("fallback_ops", ()))
    settings = ait_dynamo.LowerSettings(min_acc_module_size=0, fallback_ops=fallback_ops, options=options)
    return ait_dynamo.lower(fn, built.inputs, settings)


BACKENDS["ait-lower"] = Backend("ait-lower", "ait_dynamo.lower(model, inputs): eager and ait children", _ait_lower,
                                takes_options=True)


def _ait_cudagraphs(fn: Callable[..., Any], built: Built, extra: dict[str, Any]) -> Callable[..., Any]:
    return _ait(fn, built, {**extra, "cuda_graphs": True})


BACKENDS["ait-cudagraphs"] = Backend("ait-cudagraphs", 'torch.compile(backend="ait", mode="reduce-overhead")',
                                     _ait_cudagraphs, needs_cuda=True, cudagraphs=True, takes_options=True)


def default_backends(device: torch.device) -> list[str]:
    if device.type == "cuda":
        # max-autotune compiles for minutes: only where asked for (the micro GEMM cases)
        return [name for name in BACKENDS if name not in ("ait-lower", "inductor-max-autotune")]
    return ["eager", "ait"]


@dataclass(frozen=True)
class BackendSpec:
    """A backend as a command line names it: ``ait-cudagraphs+memory_budget=0.25``."""

    label: str  # what results and tables call it
    backend: Backend
    options: dict[str, str] = field(default_factory=dict)  # ait options on top of the workload's


def parse_backend(text: str, device: torch.device) -> BackendSpec:
    """``name[+option=value...]`` → a spec; ``ValueError`` naming what is wrong and what is valid."""
    name, *settings = text.strip().split("+")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    backend = BACKENDS[name]
    if backend.needs_cuda and device.type != "cuda":
        why = "CUDA graphs" if backend.cudagraphs else "Triton GEMM templates timed on the GPU"
        raise ValueError(f"backend {name!r} needs a CUDA device ({why}); drop it from --backends on this machine")
    options: dict[str, str] = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        if not equals or not key:
            raise ValueError(f"backend {text!r}: {setting!r} is not option=value")
        options[key.strip()] = value.strip()
    if options and not backend.takes_options:
        raise ValueError(f"backend {text!r}: only the ait backends take options, {name!r} does not")
    if options:
        from ait_dynamo.config import AitConfig

        AitConfig.create(options, environ={})  # unknown option or bad value: its ValueError names them
    return BackendSpec(text.strip(), backend, options)


def parse_backends(text: str, device: torch.device) -> list[BackendSpec]:
    specs = [parse_backend(item, device) for item in text.split(",") if item.strip()]
    if not specs:
        raise ValueError("no backend given")
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a backend is named twice: {', '.join(labels)}")
    return specs


# Environment variables naming the on-disk compile caches, and their folder in a run's scratch space.
_CACHE_VARIABLES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton", "AIT_CACHE_DIR": "ait"}


@contextlib.contextmanager
def fresh_caches(keep: bool = False) -> Iterator[None]:
    """Empty Inductor, Triton and ait disk caches for the block, so that its first compile is
    really cold (all three read their variable when they compile, not at import); ``keep``: the
    usual caches."""
    if keep:
        yield
        return
    saved = {name: os.environ.get(name) for name in _CACHE_VARIABLES}
    scratch = tempfile.mkdtemp(prefix="ait_bench_caches_")
    try:
        for name, folder in _CACHE_VARIABLES.items():
            os.environ[name] = os.path.join(scratch, folder)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class _StepBase:
    fn: Callable[..., Any]
    built: Built
    cudagraphs: bool
    last: list[torch.Tensor] = field(default_factory=list)

    def _begin(self) -> None:
        # The previous iteration's outputs die before this one starts, as in a loop that consumes
        # each result (``y = f(x); use(y); del y``): held, they count twice in the peak memory of an
        # inference step and keep their blocks from the allocator while the next call runs.
        self.last = []
        if self.cudagraphs:
            # Tell CUDA-graph trees a new iteration starts: the previous outputs may be overwritten.
            torch.compiler.cudagraph_mark_step_begin()

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of what the last ``run`` produced, to compare against eager."""
        return [t.detach().clone() for t in self.last]


class InferenceStep(_StepBase):
    phases = ("forward",)

    def run(self, mark: Callable[[], None]) -> None:
        self._begin()
        with torch.no_grad():
            out = self.fn(*self.built.inputs)
        mark()
        self.last = [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]


class FwdBwdStep(_StepBase):
    """Seed 004's benchmark: ``fn(*inputs)``, then ``out.sum().backward()`` into the inputs
    (``out.backward(grad_output)`` where the workload gives one)."""

    phases = ("forward", "backward")

    def run(self, mark: Callable[[], None]) -> None:
        self._begin()
        for x in self.built.inputs:
            x.grad = None
        out = self.fn(*self.built.inputs)
        mark()
        if self.built.grad_output is None:
            out.sum().backward()
        else:
            out.backward(self.built.grad_output)
        mark()
        self.last = [out] + [x.grad for x in self.built.inputs if x.grad is not None]


class TrainStep(_StepBase):
    """zero_grad, forward + loss (under autocast for mixed precision), backward, SGD update."""

    phases = ("forward", "backward", "optimizer")

    def __init__(self, fn: Callable[..., Any], built: Built, cudagraphs: bool, module: torch.nn.Module):
        super().__init__(fn, built, cudagraphs)
        self.parameters = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.parameters, lr=1e-3, momentum=0.9)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.built.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.built.inputs[0].device.type, dtype=dtype)

    def run(self, mark: Callable[[], None]) -> None:
        self._begin()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.fn(*self.built.inputs)
        mark()
        loss.backward()
        mark()
        self.optimizer.step()
        mark()
        self.last = [loss] + [p.grad for p in self.parameters if p.grad is not None]


def make_step(backend: Backend, built: Built, compile_extra: dict[str, Any]) -> _StepBase:
    """The step of ``built.mode`` running ``built.module`` through ``backend``.

    Training steps update the weights, so each backend trains its own copy of the untouched module:
    every backend's first step starts from the same weights and can be compared with eager's.
    """
    module: Any = built.module
    if built.mode == "train":
        module = copy.deepcopy(built.module)
    fn = backend.compile(module, built, compile_extra) if backend.compile is not None else module
    if built.mode == "inference":
        return InferenceStep(fn, built, backend.cudagraphs)
    if built.mode == "fwd_bwd":
        return FwdBwdStep(fn, built, backend.cudagraphs)
    if built.mode == "train":
        return TrainStep(fn, built, backend.cudagraphs, module)
    raise ValueError(f"unknown workload mode {built.mode!r}")
