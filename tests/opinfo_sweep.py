"""The OpInfo differential sweep: every op of PyTorch's ``op_db`` through
``torch.compile(backend="ait")``, judged against eager and an fp64 reference with dynamo's
accuracy rule (``torch._dynamo.utils.same``), forward and gradients.

Used by ``tests/test_opinfo.py`` (pytest, one test per op) and runnable on its own, which is how
the GPU sweeps are split over processes::

    python tests/opinfo_sweep.py --device cuda --dtype float16 --shard 0/8 --out shard0.json
    python tests/opinfo_sweep.py --merge shard*.json --out summary.md

Each sample runs three ways from identical inputs: eager, compiled by ait (after
``torch._dynamo.reset()``, so shapes are static and each sample compiles afresh), and eager in
float64 (the reference). A sample's outcome is one of ``STATUSES``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch._dynamo

from ait_dynamo import accuracy
from torch.utils._pytree import tree_flatten

# outcome of one sample
PASS = "pass"  # values (and gradients) agree with the reference under dynamo's rule
MISMATCH = "MISMATCH"  # ait returned a value that is off: a silent wrong answer
RAISED = "raised"  # ait raised where the same program under aot_eager runs
UNSPECIFIED = "unspecified"  # uninitialised memory or random draws: metadata compared only
EAGER_RAISES = "eager raises"  # the sample is invalid for this op in eager: skipped
TORCH_RAISES = "torch raises"  # dynamo/AOTAutograd fail on it with aot_eager too: not ait's
TORCH_MISMATCH = "torch mismatch"  # aot_eager is as far off as ait: eager itself is not reproducible
STATUSES = (PASS, MISMATCH, RAISED, UNSPECIFIED, EAGER_RAISES, TORCH_RAISES, TORCH_MISMATCH)


# Ops whose results are not specified by their inputs: their memory is uninitialised, or they
# draw random numbers. Under the same seed ait matches eager's draws (``fallback_random``), so
# those are still compared where they agree; either way they are reported apart.
UNINITIALISED = frozenset({"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty",
                           "new_empty_strided"})
RANDOM = frozenset({
    "bernoulli", "cauchy", "exponential", "geometric", "log_normal", "multinomial", "normal",
    "normal.in_place", "normal.number_mean", "uniform", "randn", "randn_like", "rand_like", "randint",
    "randint_like", "nn.functional.dropout", "nn.functional.dropout2d", "nn.functional.dropout3d",
    "nn.functional.alpha_dropout", "nn.functional.feature_alpha_dropout.with_train", "nn.functional.rrelu",
})


# Outputs that are the random generator's state, not values computed from the inputs: SDPA's
# kernels return the Philox seed and offset they read from the generator (the same seed gives
# eager and compiled code different offsets, as it does aot_eager). They are left out of the
# comparison; every other output of these ops is compared as usual.
RNG_STATE_OUTPUTS = {
    "torch.ops.aten._efficient_attention_forward": frozenset({2, 3}),
    "torch.ops.aten._flash_attention_forward": frozenset({2, 3}),
}


def _without_rng_state(name: str, outputs: Any) -> Any:
    skip = RNG_STATE_OUTPUTS.get(name)
    if not skip or not isinstance(outputs, (tuple, list)):
        return outputs
    return tuple(value for index, value in enumerate(outputs) if index not in skip)


@dataclass
class Outcome:
    op: str
    sample: int
    layout: str  # "given" (as OpInfo makes it) or "non-contiguous" (the sample's noncontiguous())
    status: str
    detail: str = ""
    gradients: bool = False  # gradients were compared too
    kernels: int = 0  # generated kernels ait compiled for this sample
    graphs: int = 0  # graphs ait compiled
    fell_back: bool = False  # ait ran a graph as AOTAutograd gave it (compile failure)
    seconds: float = 0.0


@dataclass
class OpSummary:
    op: str
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def op_name(op: Any) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def all_ops() -> list[Any]:
    from torch.testing._internal.common_methods_invocations import op_db

    return list(op_db)


def pick_dtype(op: Any, device: str, wanted: torch.dtype) -> torch.dtype | None:
    """``wanted`` where the op supports it; for ops with no floating-point dtype at all (bitwise,
    integer-only), their first integer or bool dtype, so that every op is tried once."""
    supported = op.supported_dtypes(device)
    if wanted in supported:
        return wanted
    if any(d.is_floating_point or d.is_complex for d in supported):
        return None
    for candidate in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        if candidate in supported:
            return candidate
    return None


# -- running one sample ------------------------------------------------------------------------


def _clone(value: Any, requires_grad: bool | None = None) -> Any:
    """A copy with the same sizes, strides and storage offset (non-contiguous and expanded
    samples stay so)."""
    if not isinstance(value, torch.Tensor):
        return value
    source = value.detach()
    storage = torch.empty(source.untyped_storage().nbytes(), dtype=torch.uint8, device=source.device)
    storage.untyped_storage().copy_(source.untyped_storage())
    copy = torch.empty(0, dtype=source.dtype, device=source.device)
    copy.set_(storage.untyped_storage(), source.storage_offset(), source.size(), source.stride())
    grad = value.requires_grad if requires_grad is None else requires_grad
    if grad and (copy.is_floating_point() or copy.is_complex()):
        copy.requires_grad_(True)
    return copy


def _to_fp64(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            copy = value.detach().to(torch.float64)
        elif value.is_complex():
            copy = value.detach().to(torch.complex128)
        else:
            return _clone(value)
        return copy.requires_grad_(value.requires_grad)
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return torch.float64
    return value


class _Program:
    """``op(sample.input, *sample.args, **sample.kwargs)`` as a function of the sample's tensors,
    written out as plain Python (``op(t0, [t1, t2], c0, dim=c1)``): other values are constants of
    the function, as a user program would have them, and dynamo traces it in a few steps (a
    pytree rebuild inside the function made tracing cost twice what ait's compile did)."""

    def __init__(self, op: Any, sample: Any):
        self.op = op
        self.output_process_fn_grad = sample.output_process_fn_grad
        self.tensor_values: list[torch.Tensor] = []
        self.constant_values: list[Any] = []
        arguments = [self._source(sample.input)]
        arguments += [self._source(a) for a in sample.args]
        arguments += [f"{key}={self._source(v)}" for key, v in sample.kwargs.items()]
        parameters = ", ".join(f"t{k}" for k in range(len(self.tensor_values)))
        self.source = f"def program({parameters}):\n    return op({', '.join(arguments)})\n"

    def _source(self, value: Any) -> str:
        if type(value) in (list, tuple):
            items = [self._source(v) for v in value]
            if isinstance(value, list):
                return f"[{', '.join(items)}]"
            return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
        if type(value) is dict:
            return "{" + ", ".join(f"{k!r}: {self._source(v)}" for k, v in value.items()) + "}"
        if isinstance(value, torch.Tensor):
            self.tensor_values.append(value)
            return f"t{len(self.tensor_values) - 1}"
        self.constant_values.append(value)
        return f"c{len(self.constant_values) - 1}"

    def tensors(self, convert: Callable[[Any], Any]) -> list[Any]:
        return [convert(value) for value in self.tensor_values]

    def constants(self, convert: Callable[[Any], Any]) -> list[Any]:
        return [convert(value) for value in self.constant_values]

    def function(self, constants: list[Any]) -> Callable[..., Any]:
        namespace: dict[str, Any] = {"op": self.op.op}
        namespace.update({f"c{k}": value for k, value in enumerate(constants)})
        exec(compile(self.source, f"<opinfo {op_name(self.op)}>", "exec"), namespace)
        return namespace["program"]


def _gradients(program: _Program, outputs: Any, inputs: list[Any], seed: int) -> list[Any] | None:
    """Gradients of ``sum(output * cotangent)`` over the inputs that require grad; the cotangents
    are the same numbers (drawn in fp64) for every run of a sample."""
    processed = program.output_process_fn_grad(outputs)
    outs = [t for t in tree_flatten(processed)[0]
            if isinstance(t, torch.Tensor) and t.requires_grad and (t.is_floating_point() or t.is_complex())]
    ins = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs or not ins:
        return None
    generator = torch.Generator().manual_seed(seed)
    cotangents = []
    for out in outs:
        dtype = torch.complex128 if out.is_complex() else torch.float64
        cotangents.append(torch.randn(out.shape, generator=generator, dtype=dtype).to(device=out.device, dtype=out.dtype))
    grads = torch.autograd.grad(outs, ins, cotangents, allow_unused=True)
    return [g if g is not None else torch.zeros_like(i) for g, i in zip(grads, ins)]


def _describe_difference(expected: Any, actual: Any) -> str:
    flat_e, flat_a = tree_flatten(expected)[0], tree_flatten(actual)[0]
    if len(flat_e) != len(flat_a):
        return f"{len(flat_a)} outputs, eager has {len(flat_e)}"
    for index, (e, a) in enumerate(zip(flat_e, flat_a)):
        if isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor):
            if e.shape != a.shape or e.dtype != a.dtype:
                return f"[{index}]: {tuple(a.shape)} {a.dtype}, eager {tuple(e.shape)} {e.dtype}"
            if e.numel() and not torch.equal(e, a):
                if e.is_floating_point() or e.is_complex():
                    diff = (a.to(torch.complex128 if e.is_complex() else torch.float64)
                            - e.to(torch.complex128 if e.is_complex() else torch.float64)).abs()
                    diff = torch.where(torch.isnan(diff), torch.zeros_like(diff), diff)
                    return f"[{index}]: max |ait - eager| {diff.max().item():.3g} (|eager| max {e.abs().max().item():.3g})"
                return f"[{index}]: {int((e != a).sum())} of {e.numel()} elements differ"
        elif type(e) is not type(a) or (not isinstance(e, torch.Tensor) and e != a):
            return f"[{index}]: {a!r}, eager {e!r}"
    return "differs"


def _agrees(expected: Any, actual: Any, reference: Any, dtype: torch.dtype) -> bool:
    return accuracy.agrees(expected, actual, reference, accuracy.tolerance(dtype))


def _metadata_agrees(expected: Any, actual: Any) -> bool:
    flat_e, flat_a = tree_flatten(expected)[0], tree_flatten(actual)[0]
    return len(flat_e) == len(flat_a) and all(
        (isinstance(e, torch.Tensor) and isinstance(a, torch.Tensor) and e.shape == a.shape and e.dtype == a.dtype)
        or (not isinstance(e, torch.Tensor) and type(e) is type(a))
        for e, a in zip(flat_e, flat_a)
    )


@contextlib.contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _run(fn: Callable[..., Any], tensors: list[Any], seed: int, gradients: bool, program: _Program) -> tuple[Any, list[Any], Any]:
    torch.manual_seed(seed)
    outputs = fn(*tensors)
    grads = _gradients(program, outputs, tensors, seed) if gradients else None
    return outputs, tensors, grads


def _compiled_run(program: _Program, tensors: list[Any], seed: int, gradients: bool, backend: str,
                  options: dict[str, Any] | None, dynamic: bool = False) -> tuple[Any, list[Any], Any]:
    torch._dynamo.reset()
    fn = torch.compile(program.function(program.constants(lambda v: v)), backend=backend,
                       options=options if backend == "ait" else None, dynamic=dynamic or None)
    return _run(fn, tensors, seed, gradients, program)


def run_sample(op: Any, sample: Any, index: int, layout: str, dtype: torch.dtype, gradients: bool,
               options: dict[str, Any] | None = None, seed: int = 0, dynamic: bool = False) -> Outcome:
    """Run one sample eagerly, through ait and in fp64; compare values, gradients and mutated inputs.
    ``dynamic``: compile with symbolic sizes (``torch.compile(dynamic=True)``), aot_eager's
    comparison runs too."""
    from ait_dynamo import metrics

    name = op_name(op)
    started = time.perf_counter()
    outcome = Outcome(name, index, layout, PASS, gradients=gradients)
    program = _Program(op, sample)
    eager_fn = program.function(program.constants(lambda v: v))
    try:
        with _quiet():
            expected, eager_inputs, eager_grads = _run(eager_fn, program.tensors(_clone), seed, gradients, program)
    except Exception as error:  # noqa: BLE001 - an invalid sample for this op
        outcome.status, outcome.detail = EAGER_RAISES, f"{type(error).__name__}: {str(error)[:200]}"
        return outcome
    reference = reference_grads = None
    reference_inputs: list[Any] = []
    if dtype.is_floating_point and name not in UNINITIALISED and name not in RANDOM:
        try:
            with _quiet():
                reference, reference_inputs, reference_grads = _run(
                    program.function(program.constants(_to_fp64)), program.tensors(_to_fp64), seed, gradients, program)
        except Exception:  # noqa: BLE001 - the op has no float64 kernel: compare against eager
            reference = reference_grads = None
    before = (metrics.graphs_compiled, metrics.generated_kernels, metrics.fallbacks)
    try:
        with _quiet():
            actual, ait_inputs, ait_grads = _compiled_run(program, program.tensors(_clone), seed, gradients, "ait",
                                                          options, dynamic)
    except Exception as error:  # noqa: BLE001
        outcome.status, outcome.detail = RAISED, f"{type(error).__name__}: {str(error)[:300]}"
        if _raises_without_ait(program, seed, gradients, dynamic):
            outcome.status = TORCH_RAISES
        outcome.seconds = time.perf_counter() - started
        return outcome
    finally:
        outcome.graphs = metrics.graphs_compiled - before[0]
        outcome.kernels = metrics.generated_kernels - before[1]
        outcome.fell_back = metrics.fallbacks > before[2]
        if outcome.fell_back:
            reasons = [g.fallback_reason for g in metrics.compiled_graphs[-outcome.graphs:] if g.fallback_reason]
            outcome.detail = f"ait fell back: {reasons[0][:200]}" if reasons else outcome.detail
    outcome.seconds = time.perf_counter() - started
    if name in UNINITIALISED or name in RANDOM:
        same_draws = name in RANDOM and _agrees(expected, actual, None, dtype)
        outcome.status = UNSPECIFIED
        if not _metadata_agrees(expected, actual):
            outcome.status, outcome.detail = MISMATCH, "shape or dtype differs: " + _describe_difference(expected, actual)
        else:
            outcome.detail = "same draws as eager under one seed" if same_draws else "metadata compared"
        return outcome
    expected, actual, reference = (_without_rng_state(name, v) for v in (expected, actual, reference))
    checks = [("output", expected, actual, reference)]
    checks.append(("input after the call", eager_inputs, ait_inputs, reference_inputs or None))
    if gradients:
        checks.append(("gradient", eager_grads, ait_grads, reference_grads))
    for what, want, got, ref in checks:
        if (want is None) != (got is None):
            outcome.status, outcome.detail = MISMATCH, f"{what}: ait gives {got is not None}, eager {want is not None}"
            break
        if want is not None and not _agrees(want, got, ref, dtype):
            outcome.status, outcome.detail = MISMATCH, f"{what}{_describe_difference(want, got)}"
            break
    if outcome.status == MISMATCH and _aot_eager_is_as_far(program, seed, gradients, expected, eager_grads,
                                                           reference, reference_grads, dtype, dynamic):
        outcome.status = TORCH_MISMATCH
    return outcome


def _raises_without_ait(program: _Program, seed: int, gradients: bool, dynamic: bool) -> bool:
    try:
        with _quiet():
            _compiled_run(program, program.tensors(_clone), seed, gradients, "aot_eager", None, dynamic)
    except Exception:  # noqa: BLE001
        return True
    return False


def _aot_eager_is_as_far(program: _Program, seed: int, gradients: bool, expected: Any, eager_grads: Any,
                         reference: Any, reference_grads: Any, dtype: torch.dtype, dynamic: bool) -> bool:
    """Whether dynamo + AOTAutograd without ait disagree with eager as well (a nondeterministic
    op, or a decomposition of torch's own): then the mismatch is not ait's."""
    try:
        with _quiet():
            other, _, other_grads = _compiled_run(program, program.tensors(_clone), seed, gradients, "aot_eager", None,
                                                  dynamic)
    except Exception:  # noqa: BLE001
        return False
    if not _agrees(expected, _without_rng_state(op_name(program.op), other), reference, dtype):
        return True
    return gradients and eager_grads is not None and other_grads is not None and not _agrees(
        eager_grads, other_grads, reference_grads, dtype)


# -- samples of an op ----------------------------------------------------------------------------


def samples_of(op: Any, device: str, dtype: torch.dtype, gradients: bool, limit: int | None,
               noncontiguous: bool = True, first: int = 0) -> Iterator[tuple[int, str, Any]]:
    """(index, layout, sample) for the samples ``first`` up to ``limit``: each sample as OpInfo
    makes it, then a non-contiguous copy of it where that differs (OpInfo's own samples include
    broadcasting ones). All samples are made before any runs, under one seed, so a sample's
    numbers do not depend on which others ran before it (a sweep split into chunks sees the same
    samples as one that runs them all)."""
    torch.manual_seed(0)
    samples = list(op.sample_inputs(device, dtype, requires_grad=gradients))
    for index in range(first, len(samples) if limit is None else min(limit, len(samples))):
        sample = samples[index]
        yield index, "given", sample
        if noncontiguous and any(isinstance(t, torch.Tensor) and t.dim() > 0 and t.numel() > 1
                                 for t in tree_flatten((sample.input, sample.args, sample.kwargs))[0]):
            yield index, "non-contiguous", sample.noncontiguous()


def count_samples(op: Any, device: str, dtype: torch.dtype, gradients: bool) -> int:
    torch.manual_seed(0)
    return sum(1 for _ in op.sample_inputs(device, dtype, requires_grad=gradients))


def _wants_gradients(op: Any, dtype: torch.dtype, gradients: bool) -> bool:
    return gradients and op.supports_autograd and (dtype.is_floating_point or dtype.is_complex)


def run_op(op: Any, device: str, dtype: torch.dtype, gradients: bool, limit: int | None,
           options: dict[str, Any] | None = None, noncontiguous: bool = True, first: int = 0,
           dynamic: bool = False) -> OpSummary:
    """Samples ``first`` up to ``limit`` (default: all) of one op."""
    summary = OpSummary(op_name(op))
    grad = _wants_gradients(op, dtype, gradients)
    for index, layout, sample in samples_of(op, device, dtype, grad, limit, noncontiguous, first):
        outcome = run_sample(op, sample, index, layout, dtype, grad, options, dynamic=dynamic)
        if outcome.status == EAGER_RAISES and grad:
            # an op whose sample cannot take gradients (an in-place variant on a leaf): forward only
            retry = next((s for i, l, s in samples_of(op, device, dtype, False, index + 1, first=index)
                          if i == index and l == layout), None)
            if retry is not None:
                outcome = run_sample(op, retry, index, layout, dtype, False, options, dynamic=dynamic)
        summary.outcomes.append(outcome)
    return summary


# -- shards, summaries ----------------------------------------------------------------------------


def summarise(summaries: Sequence[OpSummary], title: str) -> str:
    counts = collections.Counter(o.status for s in summaries for o in s.outcomes)
    ops_by_status: dict[str, list[str]] = collections.defaultdict(list)
    for summary in summaries:
        statuses = {o.status for o in summary.outcomes}
        worst = next((s for s in (MISMATCH, RAISED, TORCH_MISMATCH, TORCH_RAISES, UNSPECIFIED, PASS, EAGER_RAISES)
                      if s in statuses), "no samples")
        ops_by_status[worst].append(summary.op)
    lines = [f"# {title}", "", f"{len(summaries)} ops, {sum(counts.values())} samples", "",
             "| status | samples | ops (by their worst sample) |", "|---|---:|---:|"]
    for status in STATUSES + ("no samples",):
        lines.append(f"| {status} | {counts.get(status, 0)} | {len(ops_by_status.get(status, []))} |")
    outcomes = [o for s in summaries for o in s.outcomes]
    with_kernels = sum(o.kernels > 0 for o in outcomes)
    fell_back = sorted({s.op for s in summaries for o in s.outcomes if o.fell_back})
    lines += ["", f"Samples that ran generated kernels: {with_kernels}; with gradients compared: "
                  f"{sum(o.gradients for o in outcomes)}; ait compiled {sum(o.graphs for o in outcomes)} graphs.",
              f"Samples where ait could not compile a graph and ran it as AOTAutograd gave it (one warning): "
              f"{sum(o.fell_back for o in outcomes)}" + (f" ({', '.join(fell_back)})" if fell_back else "")]
    for status in (MISMATCH, RAISED, TORCH_MISMATCH, TORCH_RAISES, UNSPECIFIED):
        rows = [(s.op, o) for s in summaries for o in s.outcomes if o.status == status]
        if rows:
            lines += ["", f"## {status}", ""]
            lines += [f"- `{op}` sample {o.sample} ({o.layout}): {o.detail}" for op, o in rows]
    return "\n".join(lines) + "\n"


_WORKER_OPS: dict[str, Any] = {}

# Samples per work unit: ops with thousands of samples (max_pool2d has 1440 on the CPU) are split
# so that no process holds the sweep up; a unit of 40 samples (80 runs with the non-contiguous
# copies) takes 10-30 s on the H200 machine.
CHUNK = 40


def _init_worker() -> None:
    import logging

    torch._logging.set_logs(dynamo=logging.ERROR, aot=logging.ERROR)  # graph breaks are expected here
    warnings.simplefilter("ignore")
    _WORKER_OPS.update({op_name(op): op for op in all_ops()})


def _sweep_chunk(name: str, first: int, device: str, dtype_name: str, gradients: bool, samples: int | None,
                 noncontiguous: bool, dynamic: bool = False) -> dict[str, Any]:
    """Samples ``first`` to ``first + CHUNK`` of one op in a worker process; returns a JSON-ready
    entry. The first unit of an op also counts its samples (``total``), so that the parent can
    hand out the op's other units."""
    op = _WORKER_OPS[name]
    entry: dict[str, Any] = {"op": name, "first": first, "total": 0, "outcomes": []}
    chosen = pick_dtype(op, device, getattr(torch, dtype_name))
    if chosen is None:
        return entry
    stop = first + CHUNK if samples is None else min(first + CHUNK, samples)
    try:
        if first == 0:
            total = count_samples(op, device, chosen, _wants_gradients(op, chosen, gradients))
            entry["total"] = total if samples is None else min(total, samples)
        summary = run_op(op, device, chosen, gradients, stop, noncontiguous=noncontiguous, first=first,
                         dynamic=dynamic)
    except Exception as error:  # noqa: BLE001 - sample generation itself failed
        summary = OpSummary(name, [Outcome(name, -1, "given", EAGER_RAISES, f"samples: {type(error).__name__}: {error}")])
    entry["outcomes"] = [asdict(o) for o in summary.outcomes]
    return entry


def _unit_key(name: str, first: int) -> str:
    return f"{name}@{first}"


def _load(paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Work units done by earlier runs, by ``op@first`` (files written before the split into
    units hold whole ops: they count as their op's only unit)."""
    import gzip

    entries: dict[str, dict[str, Any]] = {}
    for path in paths:
        if os.path.exists(path):
            with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as file:
                for entry in json.load(file)["ops"]:
                    entry.setdefault("first", 0)
                    entry.setdefault("total", 0)
                    entries[_unit_key(entry["op"], entry["first"])] = entry
    return entries


def _by_op(entries: dict[str, dict[str, Any]]) -> list[OpSummary]:
    summaries: dict[str, OpSummary] = {}
    for entry in sorted(entries.values(), key=lambda e: (e["op"], e["first"])):
        summary = summaries.setdefault(entry["op"], OpSummary(entry["op"]))
        summary.outcomes += [Outcome(**o) for o in entry["outcomes"]]
    return sorted(summaries.values(), key=lambda s: s.op)


def _units_left(names: Sequence[str], done: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """(op, first sample) of every unit not done: an op never started has its first unit; an op
    whose first unit is done has the units its sample count calls for."""
    units: list[tuple[str, int]] = []
    for name in names:
        head = done.get(_unit_key(name, 0))
        if head is None:
            units.append((name, 0))
            continue
        units += [(name, first) for first in range(CHUNK, head["total"], CHUNK)
                  if _unit_key(name, first) not in done]
    return units


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    parser.add_argument("--no-gradients", action="store_true", help="forward only")
    parser.add_argument("--samples", type=int, default=None, help="first N samples per op (default: all)")
    parser.add_argument("--given-only", action="store_true", help="skip the non-contiguous copies")
    parser.add_argument("--dynamic", action="store_true",
                        help="compile with symbolic sizes (torch.compile(dynamic=True)), aot_eager's runs too")
    parser.add_argument("--shard", default="0/1", help="K/N: every N-th op from the K-th")
    parser.add_argument("--ops", default="", help="comma-separated op names (default: every op)")
    parser.add_argument("--jobs", type=int, default=1, help=f"worker processes (units of {CHUNK} samples of one op are handed out one at a time)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds: start no unit after, stop all at +60")
    parser.add_argument("--resume", nargs="*", default=[], help="JSON files of earlier runs: their units are kept, not rerun")
    parser.add_argument("--out", required=True, help=".json with the outcomes; .md with --merge")
    parser.add_argument("--merge", nargs="*", help="write the markdown summary of these JSON files")
    parser.add_argument("--title", default="OpInfo sweep")
    args = parser.parse_args(argv)
    if args.merge:
        text = summarise(_by_op(_load(args.merge)), args.title)
        with open(args.out, "w") as file:
            file.write(text)
        print(text.split("\n## ")[0])
        return 0
    started = time.monotonic()
    shard, shards = (int(v) for v in args.shard.split("/"))
    wanted = set(filter(None, args.ops.split(",")))
    done = _load(args.resume)
    names = [op_name(op) for i, op in enumerate(all_ops())
             if i % shards == shard and (not wanted or op_name(op) in wanted)]
    queue = _units_left(names, done)
    print(f"{len(queue)} units to run ({len(done)} from earlier runs) with {args.jobs} processes", flush=True)

    def save() -> None:
        with open(args.out, "w") as file:  # after every unit: a killed run keeps what it did
            json.dump({"device": args.device, "dtype": args.dtype, "dynamic": args.dynamic, "ops": list(done.values())},
                      file)

    def report(entry: dict[str, Any]) -> None:
        done[_unit_key(entry["op"], entry["first"])] = entry
        if entry["first"] == 0:  # the op's other units go first: its samples are made already
            queue[:0] = [(entry["op"], first) for first in range(CHUNK, entry["total"], CHUNK)]
        bad = [o for o in entry["outcomes"] if o["status"] in (MISMATCH, RAISED)]
        print(f"{entry['op']}@{entry['first']}: {len(entry['outcomes'])} samples, {len(bad)} bad"
              + (f" ({bad[0]['status']}: {bad[0]['detail']})" if bad else ""), flush=True)
        save()

    task = (args.device, args.dtype, not args.no_gradients, args.samples, not args.given_only, args.dynamic)
    if args.jobs <= 1:
        _init_worker()
        while queue:
            if args.deadline is not None and time.monotonic() - started > args.deadline:
                break
            name, first = queue.pop(0)
            report(_sweep_chunk(name, first, *task))
    else:
        import concurrent.futures as futures
        from concurrent.futures.process import BrokenProcessPool
        import multiprocessing

        def new_pool() -> futures.ProcessPoolExecutor:
            return futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_init_worker)

        pool = new_pool()
        pending: dict[futures.Future, tuple[str, int]] = {}
        attempts: collections.Counter[tuple[str, int]] = collections.Counter()
        try:
            while queue or pending:
                late = args.deadline is not None and time.monotonic() - started > args.deadline
                while queue and not late and len(pending) < args.jobs * 2:
                    unit = queue.pop(0)
                    attempts[unit] += 1
                    pending[pool.submit(_sweep_chunk, *unit, *task)] = unit
                if not pending:
                    break
                timeout = None if args.deadline is None else max(1.0, args.deadline + 60 - (time.monotonic() - started))
                finished, _ = futures.wait(pending, timeout=timeout, return_when=futures.FIRST_COMPLETED)
                if not finished and late:
                    print(f"deadline: {len(pending)} units still running are dropped", flush=True)
                    break
                broken = False
                for future in finished:
                    unit = pending.pop(future)
                    try:
                        report(future.result())
                    except BrokenProcessPool:
                        broken = True
                        if attempts[unit] < 2:  # a unit whose worker died runs once more in a fresh pool
                            queue.append(unit)
                        else:  # twice: a crash inside the unit itself, reported as ait's failure
                            report({"op": unit[0], "first": unit[1], "total": 0, "outcomes": [asdict(
                                Outcome(unit[0], unit[1], "given", RAISED, "the worker process died twice in this unit"))]})
                if broken:  # every unit in flight failed with the pool: run them again
                    print("a worker process died: a fresh pool runs the units in flight again", flush=True)
                    for unit in pending.values():
                        attempts[unit] -= 1
                        queue.insert(0, unit)
                    pending.clear()
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = new_pool()
        finally:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)
    save()
    left = _units_left(names, done)
    print(f"{len(done)} units of {len({e['op'] for e in done.values()})} ops done in "
          f"{time.monotonic() - started:.0f} s; units left: {len(left)} (ops not started: "
          f"{sum(first == 0 for _, first in left)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
