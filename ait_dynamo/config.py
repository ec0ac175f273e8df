"""Every option of the backend in one frozen dataclass.

Options come from four places, later ones winning: the defaults below, the presets of
``torch.compile``'s ``mode=`` (``_MODE_OPTIONS``), ``AIT_*`` environment variables, and
``options={...}`` / keyword arguments of the public
functions. Every value is validated here, so the rest of the code can trust an ``AitConfig``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

log = logging.getLogger("ait_dynamo")

PARTITIONERS = ("min_cut", "default", "functorch")
# torch.compile's modes, as Inductor names them: "reduce-overhead" replays CUDA graphs,
# "max-autotune" also benchmarks block sizes.
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_MODE_OPTIONS: dict[str, dict[str, bool]] = {
    "default": {},
    "reduce-overhead": {"cuda_graphs": True},
    "max-autotune": {"cuda_graphs": True, "autotune": True},
    "max-autotune-no-cudagraphs": {"autotune": True},
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ait_dynamo")


def _default_compile_workers() -> int:
    """One precompiling thread per core this process may run on, at most 16. Part of Triton's
    compile runs outside Python's lock (its native passes, ptxas in a subprocess): the 37 kernels
    of a BERT-base training step, compiled for sm90 on an idle 2-core CPU, took 9.96 s in one
    thread, 7.66 s in two and 8.18 s in four (more threads than cores cost;
    benchmarks/results/cpu-epyc/compile_time/). The default was 4 threads, more than a 2-core
    machine runs well and a quarter of a 16-core GPU host."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 4
    return max(1, min(16, cores))


@dataclass(frozen=True)
class AitConfig:
    """Options of the ait backend. Build one with :meth:`AitConfig.create`.

    Attributes:
        debug_dir: folder that receives, per compiled graph, the input graph, the graph after each
            pass, the plan and the generated module. ``None`` writes nothing.
        partitioner: how AOTAutograd splits the joint graph: ``"min_cut"`` (ours: recompute cheap ops
            to save memory), ``"default"`` (save what the forward computed) or ``"functorch"``
            (functorch's min-cut partitioner, for comparison).
        memory_budget: most bytes the forward may save for the backward (parameters excluded):
            an ``int`` of bytes (from ``"2GiB"``, ``"512MB"``, ``1000000``) or a ``float`` in (0, 1],
            a fraction of what the default partition saves. ``None``: no budget.
        fusion: group fusible ops into generated kernels; ``False`` runs every op through ATen.
        fallback_ops: aten ops (``"aten.mm"`` or ``"aten.mm.default"``) always run through ATen.
        cache_dir: on-disk cache of generated modules.
        autotune: benchmark a few block sizes of each generated kernel once (CUDA, with
            ``triton.testing.do_bench``) and keep the fastest, persisted per kernel and device
            under ``cache_dir``; ``False`` uses the block-size heuristic.
        compile_workers: threads compiling a graph's CUDA kernels ahead of their first launch
            (static shapes); ``0`` compiles each kernel at its first launch instead. Default: one
            per usable core, at most 16.
        fallback_random: random ops (dropout) run through ATen, so results equal eager's under
            the same ``torch.manual_seed``; ``False`` generates them inside the fused kernels with
            Philox (faster; same distribution, a different stream: see ``kernels/op_table.py``).
        cuda_graphs: replay each compiled graph as a CUDA graph after its first two calls (one
            call enqueues all its kernels: for host-bound steps); see ``ait_dynamo/cuda_graphs.py``
            for what is read in place and what is copied. ``mode="reduce-overhead"`` sets it.
        rewrite_attention: before AOTAutograd, replace attention subgraphs (matmul, scale, mask,
            softmax, matmul) with ``scaled_dot_product_attention`` where that is the same
            function (``passes/attention.py`` says when), so that fused attention kernels run
            forward and backward. Refusals and rewrites are listed in the fusion report.
        attention_min_keys: an attention over at most this many keys keeps its explicit matmuls
            and softmax (default 64): its scores are small, and SDPA's fused kernels were slower
            there (Swin-T's 7x7 windows, 49 keys, on the H200: cuDNN's flash kernel took 811 us
            for 7 of the 12 blocks, Inductor's bmm + softmax about 950 us for all 12).
        pad_gemms: ``"auto"``: mm / addmm / bmm whose K or N is not a multiple of the tensor
            cores' alignment run on zero-padded operands where a measurement on the CUDA device
            says it pays (kept on disk per shape); ``"always"``, ``"never"``.
        onednn_gemms: ``"auto"``: on CPU graphs where nothing is generated (``fusion`` off), mm /
            addmm run as oneDNN's linear (with a following ReLU, GELU, SiLU, sigmoid or tanh
            folded in) where a measurement on this CPU says it is faster, kept on disk per shape
            (``passes/onednn_gemm.py``); ``"always"`` wherever eligible; ``"never"``.
        min_acc_module_size: a Dynamo graph with fewer ops than this runs in eager instead of
            through ait (as the lowering API's setting of the same name: tiny pieces between graph
            breaks are not worth a compile). ``0`` compiles every graph.
        verify: the online numerics guard. On the first call of each compiled graph, every
            generated kernel's outputs are compared with ATen running the same nodes (and with
            float64 where the dtype allows), by dynamo's accuracy rule; a kernel past tolerance
            runs through ATen from then on, with one warning and a line in the fusion report.
            Later calls pay nothing (``AIT_VERIFY=1``).
        channels_last: run convolutional graphs channels-last (``passes/layout.py``):
            ``"auto"`` where it pays, on CUDA graphs that are conv-dominated with fp16 / bf16
            convolutions (the module doc of ``passes/layout.py`` states the rule), never on
            other devices; ``"on"`` on any
            device (how the CPU tests exercise it); ``"off"`` never. ``True`` / ``False`` mean
            ``"on"`` / ``"off"``. The graph's outputs keep the strides eager gives them.
        gemm_backends: which implementations an mm / addmm / bmm may take: ``"aten"`` (cuBLAS,
            its epilogue a separate fused kernel; under ``autotune`` also cuBLASLt's own ReLU or
            tanh-GELU epilogue, ``aten._addmm_activation``, where it measures faster), ``"triton"``
            (``kernels/templates/gemm.py.jinja``, the epilogue fused into the GEMM) and ``"cutlass"``
            (CUTLASS 3 SM90 kernels with bias, residual and activation fused,
            ``passes/cutlass_gemm.py``; needs nvcc and the ``cutlass`` extra, and is skipped with
            one log line without them). With several, the choice is by measurement on CUDA under
            ``autotune``, and ATen otherwise
            (``kernels/gemm_choice.py`` states the rule); with one, that one is used wherever it
            can run.
        autotune_budget_s: most seconds one graph spends measuring GEMM backends and configs
            (``autotune``); past it, the remaining GEMMs take the heuristic's choice.
        fused_batch_norm_training: training batch norm as generated kernels (column sums for the
            statistics, split over programs, and a pointwise normalisation that fuses with its
            neighbours; the backward likewise) instead of ATen's kernels. Off by default until it
            is measured on a GPU (``passes/decompositions.py``: as accurate as eager's).
        batch_norm_reductions: what reduces training batch norm over inputs laid out as rows of
            channels (channels-last): ``"triton"`` (``kernels/batch_norm_channels.py``: the
            statistics and the backward's sums, where Triton runs) or ``"aten"`` (ATen's
            ``batch_norm_stats`` and ``native_batch_norm_backward`` on CUDA).
    """

    debug_dir: str | None = None
    partitioner: str = "min_cut"
    fusion: bool = True
    fallback_ops: tuple[str, ...] = ()
    memory_budget: int | float | None = None
    cache_dir: str = field(default_factory=_default_cache_dir)
    autotune: bool = False
    fallback_random: bool = True
    compile_workers: int = field(default_factory=_default_compile_workers)
    cuda_graphs: bool = False
    verify: bool = False
    rewrite_attention: bool = True
    attention_min_keys: int = 64
    pad_gemms: str = "auto"
    onednn_gemms: str = "auto"
    min_acc_module_size: int = 0
    channels_last: str = "auto"
    gemm_backends: tuple[str, ...] = ("aten", "triton")
    autotune_budget_s: float = 60.0
    fused_batch_norm_training: bool = False
    batch_norm_reductions: str = "triton"

    @staticmethod
    def option_names() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(AitConfig))

    @classmethod
    def create(
        cls,
        options: Mapping[str, Any] | None = None,
        mode: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "AitConfig":
        """Defaults, then ``AIT_*`` variables of ``environ`` (``os.environ``), then ``options``."""
        if mode is not None and mode not in MODES:
            raise ValueError(
                f"ait backend: unknown mode {mode!r}; valid modes: {', '.join(MODES)} "
                "(tuning knobs go in options={...})"
            )
        if options is not None and not isinstance(options, Mapping):
            raise ValueError(f"ait backend: options must be a dict, got {type(options).__name__}")
        values: dict[str, Any] = dict(_MODE_OPTIONS[mode or "default"])
        values.update(_from_environment(os.environ if environ is None else environ))
        for name, value in (options or {}).items():
            if name not in _PARSERS:
                raise ValueError(
                    f"ait backend: unknown option {name!r}; valid options: "
                    f"{', '.join(cls.option_names())}"
                )
            values[name] = _PARSERS[name](name, value)
        return cls(**values)

    def replace(self, **options: Any) -> "AitConfig":
        """A copy with ``options`` validated and applied."""
        checked = AitConfig.create(options, environ={})
        changed = {k: getattr(checked, k) for k in options}
        return dataclasses.replace(self, **changed)

    def is_fallback(self, target: Any) -> bool:
        """True if the user asked to keep this aten op (overload or whole packet) in eager."""
        if not isinstance(target, torch._ops.OpOverload) or not self.fallback_ops:
            return False
        return str(target) in self.fallback_ops or str(target.overloadpacket) in self.fallback_ops

    def cache_token(self) -> str:
        """The options that change generated code (the cache key includes them)."""
        return repr((self.fusion, self.fallback_ops, self.autotune, self.fallback_random, self.verify,
                     self.rewrite_attention, self.pad_gemms, self.channels_last, self.gemm_backends,
                     self.autotune_budget_s, self.fused_batch_norm_training, self.onednn_gemms,
                     self.attention_min_keys, self.batch_norm_reductions))


def _parse_str_or_none(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ValueError(f"ait backend: option {name!r} must be a path string or None, got {value!r}")


def _parse_path(name: str, value: Any) -> str:
    parsed = _parse_str_or_none(name, value)
    if parsed is None:
        raise ValueError(f"ait backend: option {name!r} needs a folder path, got {value!r}")
    return parsed


def _parse_workers(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise ValueError(f"ait backend: option {name!r} must be an int from 0 to 64, got {value!r}")
    return value


def _parse_count(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"ait backend: option {name!r} must be an int >= 0, got {value!r}")
    return value


def _parse_partitioner(name: str, value: Any) -> str:
    if value not in PARTITIONERS:
        raise ValueError(
            f"ait backend: option {name!r} got {value!r}; valid values: {', '.join(PARTITIONERS)}"
        )
    return str(value)


def _parse_measured_mode(name: str, value: Any) -> str:
    """A choice made by measurement (``pad_gemms``, ``onednn_gemms``): ``"auto"``, ``"always"``
    or ``"never"``; ``True`` / ``False`` mean ``"auto"`` / ``"never"``."""
    from ait_dynamo.passes.pad_gemm import PAD_MODES

    if isinstance(value, bool):
        value = "auto" if value else "never"
    if value not in PAD_MODES:
        raise ValueError(f"ait backend: option {name!r} got {value!r}; valid values: {', '.join(PAD_MODES)}")
    return str(value)


BATCH_NORM_REDUCTIONS = ("triton", "aten")


def _parse_batch_norm_reductions(name: str, value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() in BATCH_NORM_REDUCTIONS:
        return value.strip().lower()
    raise ValueError(f"ait backend: option {name!r} got {value!r}; valid values: {', '.join(BATCH_NORM_REDUCTIONS)}")


def _parse_layout_mode(name: str, value: Any) -> str:
    from ait_dynamo.passes.layout import LAYOUT_MODES

    if isinstance(value, bool):
        value = "on" if value else "off"
    if isinstance(value, str):
        value = value.strip().lower()
        if value not in LAYOUT_MODES and value in _TRUE + _FALSE:  # AIT_CHANNELS_LAST=1 / 0
            value = "on" if value in _TRUE else "off"
    if value not in LAYOUT_MODES:
        raise ValueError(f"ait backend: option {name!r} got {value!r}; valid values: {', '.join(LAYOUT_MODES)} "
                         "(or True / False for on / off)")
    return str(value)


GEMM_BACKENDS = ("aten", "triton", "cutlass")


def _parse_gemm_backends(name: str, value: Any) -> tuple[str, ...]:
    """A tuple / list of backend names, or a string of them separated by commas or colons
    (``AIT_GEMM_BACKENDS=triton``; ``ait+gemm_backends=aten:cutlass`` in a benchmark's backend
    list, which commas already separate)."""
    items = value.replace(":", ",").split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"ait backend: option {name!r} must be a tuple of backend names "
                         f"({', '.join(GEMM_BACKENDS)}), got {value!r}")
    names = [i.strip().lower() for i in items if i.strip()]
    unknown = [i for i in names if i not in GEMM_BACKENDS]
    if unknown or not names:
        raise ValueError(f"ait backend: option {name!r} got {value!r}; give one or more of "
                         f"{', '.join(GEMM_BACKENDS)}")
    return tuple(b for b in GEMM_BACKENDS if b in names)  # canonical order: one cache key per set


def _parse_seconds(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"ait backend: option {name!r} must be a number of seconds >= 0, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"ait backend: option {name!r} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"ait backend: option {name!r} must be True or False, got {value!r}")


def resolve_aten_op(name: str) -> torch._ops.OpOverloadPacket | torch._ops.OpOverload:
    """``"aten.mm"`` / ``"aten.mm.default"`` / ``"mm"`` → the op; ``ValueError`` if there is none."""
    parts = name.strip().split(".")
    if parts and parts[0] == "torch":
        parts = parts[1:]
    if parts and parts[0] == "ops":
        parts = parts[1:]
    if parts and parts[0] != "aten":
        parts = ["aten", *parts]
    if len(parts) not in (2, 3):
        raise ValueError(f"ait backend: fallback_ops entry {name!r} is not an aten op name")
    packet = getattr(torch.ops.aten, parts[1], None)
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        raise ValueError(
            f"ait backend: fallback_ops entry {name!r} names no aten op "
            "(write it like 'aten.mm' or 'aten.mm.default')"
        )
    if len(parts) == 2:
        return packet
    if parts[2] not in packet.overloads():
        raise ValueError(
            f"ait backend: fallback_ops entry {name!r}: aten.{parts[1]} has no overload "
            f"{parts[2]!r}; valid overloads: {', '.join(packet.overloads())}"
        )
    return getattr(packet, parts[2])


def _parse_fallback_ops(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ValueError(f"ait backend: option {name!r} must be a list of aten op names, got {value!r}")
    names = []
    for item in items:
        if isinstance(item, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            item = str(item)
        if not isinstance(item, str):
            raise ValueError(f"ait backend: option {name!r} entries must be op names, got {item!r}")
        op = resolve_aten_op(item)
        names.append(str(op) if isinstance(op, torch._ops.OpOverload) else f"aten.{op._qualified_op_name.split('::')[1]}")
    return tuple(sorted(set(names)))


_BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def _parse_memory_budget(name: str, value: Any) -> int | float | None:
    """Bytes (int, or a string with a unit: "2GiB", "512MB") or a fraction in (0, 1] (float, or a
    string "0.5" / "50%")."""
    bad = (
        f"ait backend: option {name!r} got {value!r}; give bytes (an int, or a string like '2GiB', "
        "'512MB') or a fraction of the default partition's saved bytes (a float in (0, 1] or '50%')"
    )
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, bool):
        raise ValueError(bad)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "").replace("_", "")
        try:
            if text.endswith("%"):
                value = float(text[:-1]) / 100.0
            else:
                unit = next((u for u in sorted(_BYTE_UNITS, key=len, reverse=True) if text.endswith(u)), None)
                if unit is not None:
                    value = int(float(text[: -len(unit)]) * _BYTE_UNITS[unit])
                elif "." in text or "e" in text:
                    value = float(text)
                else:
                    value = int(text)
        except ValueError:
            raise ValueError(bad) from None
    if isinstance(value, float) and value > 1.0 and value.is_integer():
        value = int(value)  # 2e9: bytes written as a float
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ValueError(bad)
        return value
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError(bad)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "debug_dir": _parse_str_or_none,
    "partitioner": _parse_partitioner,
    "fusion": _parse_bool,
    "fallback_ops": _parse_fallback_ops,
    "memory_budget": _parse_memory_budget,
    "cache_dir": _parse_path,
    "autotune": _parse_bool,
    "fallback_random": _parse_bool,
    "compile_workers": _parse_workers,
    "cuda_graphs": _parse_bool,
    "verify": _parse_bool,
    "rewrite_attention": _parse_bool,
    "attention_min_keys": _parse_count,
    "pad_gemms": _parse_measured_mode,
    "onednn_gemms": _parse_measured_mode,
    "min_acc_module_size": _parse_count,
    "channels_last": _parse_layout_mode,
    "gemm_backends": _parse_gemm_backends,
    "autotune_budget_s": _parse_seconds,
    "fused_batch_norm_training": _parse_bool,
    "batch_norm_reductions": _parse_batch_norm_reductions,
}
assert set(_PARSERS) == set(AitConfig.option_names()), "every option needs a parser"


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("AIT_"):
            continue
        name = key[4:].lower()
        if name not in _PARSERS:
            # AITemplate and other tools also use AIT_* names: a stray one is not ours to reject.
            log.debug("ignoring environment variable %s: not an ait_dynamo option", key)
            continue
        try:
            values[name] = _PARSERS[name](name, raw)
        except ValueError as error:
            raise ValueError(f"environment variable {key}: {error}") from None
    return values
