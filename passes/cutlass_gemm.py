"""GEMMs with their epilogue through CUTLASS on CUDA graphs (issue 14), where option
``gemm_backends`` names ``"cutlass"`` and the choice rule says so.

What is matched: an ``mm`` / ``addmm`` (a bias of N elements, ``beta`` 1) / ``bmm`` on CUDA with
static sizes that CUDA's copy engine can load (``kernels/cutlass_gemm.refusal``), then, seen
through one reshape (``nn.Linear`` on a 3-d input is view, addmm, view), an ``add`` of a residual
of the result's shape that is its only reader, then one activation (ReLU, GELU, tanh-GELU, SiLU,
sigmoid, tanh). A GEMM with none of bias, scale, residual or activation stays with cuBLAS. The
chain becomes one ``ait::cutlass_gemm`` call (``kernels/cutlass_gemm.py``); where a value of the
chain before the activation has other readers (a training forward saves the 2-d product for the
backward), ``ait::cutlass_gemm_pre`` stores the pre-activation as a second output, and those
readers read it (viewed to their node's shape).

The choice, like the Triton template's (``kernels/gemm_choice.py``):

* ``gemm_backends`` of only ``"cutlass"``: every GEMM CUTLASS can compute takes it (tests use
  this); its tile is measured with ``autotune``, else the first candidate that gives every SM a
  tile (the same rule as the Triton heuristic);
* with ``"aten"`` too: a measurement on CUDA with ``autotune`` — each candidate configuration of
  ``kernels/cutlass_gemm.CONFIGS``, built in parallel, against cuBLAS plus a copy of the bytes
  the epilogue's ops add to ait's kernels in the plan where every GEMM runs through ATen
  (``kernels/epilogue_cost.py``, as ``kernels/gemm_tuning.py`` measures; a separate epilogue
  kernel's bytes where that plan cannot tell); the fastest wins if its result agrees with ATen's
  by the numerics guard's rule. The decision is kept on disk per device, with the bytes charged
  to ATen, under ``<cache_dir>/cutlass_gemm/``. Without a measurement: ATen.
  The Triton template, where allowed too, is then measured for the GEMMs CUTLASS did not take.

cuBLASLt's own epilogue is a candidate of the same measurement where ATen exposes it: an
``addmm`` whose only epilogue is a ReLU or a tanh-GELU, no residual, no second output, becomes
``aten._addmm_activation`` if that measures fastest (``"aten"`` in ``gemm_backends`` and
``autotune``; it needs neither nvcc nor CUTLASS). On ATen's side, the activation runs inside
cuBLASLt's GEMM.

Without nvcc or CUTLASS's headers (``kernels/cutlass_build.py``), the pass logs once and measures
only cuBLASLt's candidate, where it may.
"""

from __future__ import annotations

import logging
import numbers
import operator
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo.cache import device_choices_path, load_json, store_json
from ait_dynamo.kernels import cutlass_build, cutlass_gemm, gemm_configs, gemm_tuning
from ait_dynamo.kernels.epilogue_cost import AtenPlanBytes
from ait_dynamo.passes.graph_utils import (RESHAPES, activation_name, fake_result, has_static_layout, meta_value,
                                           random_like, real_tensors)

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten

_GEMMS = (aten.mm.default, aten.addmm.default, aten.bmm.default)
Bench = Callable[[Callable[[], Any]], float]


@dataclass
class Match:
    """One GEMM and the epilogue CUTLASS computes with it: gemm [→ view] [→ add] [→ act]."""

    gemm: fx.Node
    a: fx.Node
    b: fx.Node
    bias: fx.Node | None
    alpha: float
    view: fx.Node | None  # the reshape between the GEMM and its epilogue
    add: fx.Node | None
    residual: fx.Node | None
    act: fx.Node | None
    activation: str
    pre: bool  # the value before the activation is read elsewhere too: the kernel's second output
    cutlass: bool = True  # CUTLASS can compute it (``kernels/cutlass_gemm.refusal``)

    @property
    def chain(self) -> list[fx.Node]:
        return [n for n in (self.gemm, self.view, self.add, self.act) if n is not None]

    def spec_args(self) -> tuple[torch.dtype, str, str, str, bool, bool]:
        layouts = [cutlass_gemm.operand_layout(meta_value(x)) for x in (self.a, self.b)]
        return (meta_value(self.gemm).dtype, layouts[0][0], layouts[1][0], self.activation,  # type: ignore[index]
                self.residual is not None, self.pre)


def _static_cuda(value: Any) -> bool:
    return has_static_layout(value) and value.device.type == "cuda"


def _one(nodes: list[fx.Node]) -> fx.Node | None:
    return nodes[0] if len(nodes) == 1 else None


def _residual_add(head: fx.Node, out: torch.Tensor) -> tuple[fx.Node, fx.Node] | None:
    """(add, residual) where ``head``'s only reader adds a tensor of its shape and dtype to it."""
    add = _one(list(head.users))
    if add is None or add.op != "call_function" or add.target is not aten.add.Tensor or len(add.args) != 2 \
            or add.kwargs:
        return None
    other = add.args[1] if add.args[0] is head else add.args[0]
    value = meta_value(other) if isinstance(other, fx.Node) else None
    shape = tuple(meta_value(head).shape)
    if not isinstance(value, torch.Tensor) or other is head or not _static_cuda(value) or value.dtype != out.dtype \
            or tuple(value.shape) != shape or not value.is_contiguous() or tuple(meta_value(add).shape) != shape:
        return None
    return add, other


def match(node: fx.Node) -> Match | None:
    """The GEMM chain starting at ``node`` with an epilogue, or None; ``cutlass`` says whether
    CUTLASS can compute it (else only cuBLASLt's epilogue may, see ``lt_applies``). Along the chain, a
    value read elsewhere too (a forward's value saved for the backward) must be one the kernel
    writes: the result, or the pre-activation as its second output; a value before a residual
    add is neither, so such an add stays out of the chain."""
    if node.op != "call_function" or node.target not in _GEMMS or node.kwargs.get("out_dtype") is not None:
        return None
    if node.target is aten.addmm.default:
        bias, a, b = node.args[:3]
        beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
        if beta != 1 or not isinstance(alpha, numbers.Real) or not isinstance(bias, fx.Node):
            return None
    else:
        (a, b), bias, alpha = node.args[:2], None, 1
    out = meta_value(node)
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or not all(
            _static_cuda(meta_value(x)) for x in (node, a, b, *([bias] if bias is not None else []))):
        return None
    # what CUTLASS refuses (float32 without TF32, unaligned rows) may still be cuBLASLt's
    cutlass = cutlass_gemm.refusal(meta_value(a), meta_value(b), meta_value(bias) if bias is not None else None,
                                   None, out.dtype) is None
    view = None
    if node.target is not aten.bmm.default and out.is_contiguous():
        view = _one([u for u in node.users if u.op == "call_function" and u.target in RESHAPES and u.args[0] is node
                     and meta_value(u).shape[-1] == out.shape[-1]])
    head = view or node
    add = residual = None
    if view is None or len(node.users) == 1:
        found = _residual_add(head, out)
        if found is not None and cutlass and cutlass_gemm.refusal(
                meta_value(a), meta_value(b), None, meta_value(found[1]).reshape(out.shape), out.dtype) is None:
            add, residual = found
    value = add or head
    act = _one([u for u in value.users if u.op == "call_function" and u.args and u.args[0] is value
                and activation_name(u) is not None])
    activation = activation_name(act) if act is not None else "identity"
    chain = [n for n in (node, view, add, act) if n is not None]
    read_elsewhere = any(u not in chain for n in chain[:-1] for u in n.users) if act is not None else False
    if act is None and add is None and bias is None and alpha == 1:
        return None  # a bare GEMM (a reshape of it too): cuBLAS computes exactly that
    return Match(node, a, b, bias, float(alpha), view, add, residual, act, activation or "identity", read_elsewhere,
                 cutlass)


# The 128x256 tile only from this many columns on. On the H200 it was the fastest CUTLASS kernel
# at N = 3072 and 8192, but at N = 768 (the 002 encoder's fc2 at batch 128) it took 0.249 ms
# against the 128x128 ping-pong kernel's 0.176 (benchmarks/results/nvidia-h200/cutlass/).
_WIDE_TILE_MIN_N = 2048


def _heuristic(m: Match) -> int:
    """Index into CONFIGS without measuring: the largest tile that gives every SM one (the wide
    tile only for wide products)."""
    out = meta_value(m.gemm)
    rows, cols = (out.shape[-2], out.shape[-1])
    batch = out.shape[0] if out.dim() == 3 else 1
    for index, (tile, _, _) in enumerate(cutlass_gemm.CONFIGS):
        if tile[1] > 128 and cols < _WIDE_TILE_MIN_N:
            continue
        if batch * -(-rows // tile[0]) * -(-cols // tile[1]) >= gemm_configs.SMS:
            return index
    return len(cutlass_gemm.CONFIGS) - 1


def _operands(m: Match) -> dict[str, Any]:
    out = meta_value(m.gemm)
    residual = random_like(meta_value(m.residual)).reshape(out.shape) if m.residual is not None else None
    return {"a": random_like(meta_value(m.a)), "b": random_like(meta_value(m.b)),
            "bias": random_like(meta_value(m.bias)) if m.bias is not None else None, "residual": residual}


def _wrong(m: Match, library: str, ops: dict[str, Any]) -> str | None:
    """What differs between the kernel and the chain's ATen ops (and float64), or None."""
    got, _ = cutlass_gemm.run(library, ops["a"], ops["b"], ops["bias"], ops["residual"], m.activation, m.alpha, 1.0,
                              pre=m.pre, strict=True)
    return _differs(m, got, ops)


def _differs(m: Match, got: torch.Tensor, ops: dict[str, Any]) -> str | None:
    """What differs between ``got`` and the chain's ATen ops (and float64), or None."""
    from ait_dynamo.verify import compare

    def chain(convert: Callable[[Any], Any]) -> Any:
        x = {k: convert(v) if v is not None else None for k, v in ops.items()}
        value = torch.matmul(x["a"], x["b"]) * m.alpha
        if x["bias"] is not None:
            value = value + x["bias"]
        if x["residual"] is not None:
            value = value + x["residual"]
        return cutlass_gemm.apply_activation(value, m.activation)

    return compare(got, chain(lambda t: t), chain(lambda t: t.double()))


def _config_name(index: int) -> str:
    tile, cluster, schedule = cutlass_gemm.CONFIGS[index]
    return f"{schedule.lower()}_{'x'.join(map(str, tile))}_{'x'.join(map(str, cluster))}"


# The candidate name of cuBLASLt's epilogue (``aten._addmm_activation``), beside CONFIGS' indices.
CUBLASLT = "cublaslt"
_LT_ACTIVATIONS = {"relu": False, "gelu_tanh": True}  # activation -> use_gelu (cuBLASLt's GELU is tanh's)


def lt_applies(m: Match) -> bool:
    """Whether ``aten._addmm_activation`` computes the chain: bias and one activation it has."""
    return (m.gemm.target is aten.addmm.default and m.activation in _LT_ACTIVATIONS and m.residual is None
            and not m.pre and m.alpha == 1 and meta_value(m.bias).dim() == 1
            and meta_value(m.gemm).dtype in (torch.float16, torch.bfloat16, torch.float32))


def _lt_kwargs(m: Match) -> dict[str, Any]:
    return {"use_gelu": _LT_ACTIVATIONS[m.activation]}


def separate_epilogue_bytes(m: Match) -> int:
    """What ait's epilogue kernel after cuBLAS moves when it runs on its own: the product and the
    residual read, the result (and the pre-activation) written."""
    out = meta_value(m.gemm)
    epilogue = m.act is not None or m.add is not None or (m.alpha != 1)
    return (2 + (m.residual is not None) + m.pre) * out.numel() * out.element_size() if epilogue else 0


def _measure(m: Match, libraries: list[str | Exception], bench: Bench, lt: bool = False,
             moved: int | None = None) -> tuple[int | str | None, dict[str, float]]:
    """(the fastest candidate whose result agrees with ATen's: an index into ``libraries``, or
    CUBLASLT with ``lt``; None if none; the times in ms by candidate, and ATen's under "aten").
    ``moved``: the bytes ATen's side copies after cuBLAS for ait's epilogue work
    (``kernels/epilogue_cost.py``; default :func:`separate_epilogue_bytes`)."""
    ops = _operands(m)
    out = meta_value(m.gemm)
    times: dict[str, float] = {}
    best: tuple[float, int | str] | None = None
    for index, library in enumerate(libraries):
        if isinstance(library, Exception):
            continue
        try:
            problem = _wrong(m, library, ops)
        except RuntimeError as error:  # CUTLASS cannot run this problem with that kernel
            problem = str(error)
        if problem is not None:
            log.warning("ait_dynamo: CUTLASS candidate %s differs from ATen (%s); not chosen", library, problem)
            continue
        ms = bench(lambda: cutlass_gemm.run(library, ops["a"], ops["b"], ops["bias"], ops["residual"],
                                            m.activation, m.alpha, 1.0, m.pre, strict=True))
        times[_config_name(index)] = ms
        if best is None or ms < best[0]:
            best = (ms, index)
    if lt:
        lt_args, lt_kwargs = (ops["bias"], ops["a"], ops["b"]), _lt_kwargs(m)
        problem = _differs(m, aten._addmm_activation.default(*lt_args, **lt_kwargs), ops)
        if problem is not None:
            log.warning("ait_dynamo: cuBLASLt's epilogue differs from ATen (%s); not chosen", problem)
        else:
            times[CUBLASLT] = bench(lambda: aten._addmm_activation.default(*lt_args, **lt_kwargs))
            if best is None or times[CUBLASLT] < best[0]:
                best = (times[CUBLASLT], CUBLASLT)
    # ATen: cuBLAS, then ait's epilogue work, measured as a copy of the bytes it moves
    if moved is None:
        moved = separate_epilogue_bytes(m)
    source = torch.empty(max(moved // 2, 1), dtype=torch.uint8, device=out.device)
    target = torch.empty_like(source)
    gemm_args = [ops["bias"], ops["a"], ops["b"]] if m.bias is not None else [ops["a"], ops["b"]]

    def aten_form() -> Any:
        m.gemm.target(*gemm_args, **m.gemm.kwargs)
        if moved:
            target.copy_(source)

    times["aten"] = bench(aten_form)
    return (best[1] if best is not None else None), times


def _aten_side_bytes(gm: fx.GraphModule, config: Any, matches: list[Match]) -> dict[fx.Node, int]:
    """GEMM → the bytes its chain's epilogue adds to ait's kernels when cuBLAS computes it, from
    the plan of this graph with every GEMM through ATen (``kernels/epilogue_cost.py``); GEMMs
    that plan cannot tell about are left out (they are charged a separate epilogue kernel)."""
    from ait_dynamo.passes.fusion import build_plan

    try:
        plan, _ = build_plan(gm, config, {n.name: False for n in gm.graph.nodes if n.target in _GEMMS})
    except Exception as error:  # noqa: BLE001 - the planner runs again, and reports, after the passes
        log.info("cutlass gemm: no all-ATen plan to charge epilogues by (%s)", error)
        return {}
    planned = AtenPlanBytes(plan)
    result: dict[fx.Node, int] = {}
    for m in matches:
        moved = planned.epilogue_bytes(m.chain[1:]) if m.chain[1:] else 0
        if moved is not None:
            result[m.gemm] = moved
    return result


def _key(m: Match) -> str:
    parts = [str(m.gemm.target), m.activation, f"alpha={m.alpha}", f"pre={m.pre}",
             f"tf32={torch.backends.cuda.matmul.allow_tf32}"]
    for x in (m.a, m.b, m.bias, m.residual):
        value = meta_value(x) if x is not None else None
        parts.append("-" if value is None else f"{tuple(value.shape)}:{tuple(value.stride())}:{value.dtype}")
    return "|".join(parts)


def _rewrite(gm: fx.GraphModule, m: Match, library: str) -> dict[fx.Node, fx.Node]:
    """Replace the chain by one call (``library``: a CUTLASS kernel's path, or CUBLASLT): each
    reader outside the chain reads what the call wrote for the node it read (the result, or with
    an activation the pre-activation), viewed to that node's shape. Returns what each replaced
    node read elsewhere became."""
    graph = gm.graph
    renamed: dict[fx.Node, fx.Node] = {}
    out = meta_value(m.gemm)
    shape = list(out.shape)
    last = m.chain[-1]

    def add_node(target: Any, args: tuple, kwargs: dict[str, Any] | None = None) -> fx.Node:
        node = graph.call_function(target, args, kwargs)
        node.meta["val"] = args[0].meta["val"][args[1]] if target is operator.getitem \
            else fake_result(target, args, kwargs)
        return node

    with graph.inserting_before(last):
        residual = m.residual
        if residual is not None and list(meta_value(residual).shape) != shape:
            residual = add_node(aten.view.default, (residual, shape))
        if library == CUBLASLT:
            call = add_node(aten._addmm_activation.default, (m.bias, m.a, m.b), _lt_kwargs(m))
        else:
            op = torch.ops.ait.cutlass_gemm_pre.default if m.pre else torch.ops.ait.cutlass_gemm.default
            call = add_node(op, (m.a, m.b, m.bias, residual, library, m.activation, m.alpha, 1.0))
        result, before = (call, None) if not m.pre else (
            add_node(operator.getitem, (call, 0)), add_node(operator.getitem, (call, 1)))

        def shaped(value: fx.Node, like: fx.Node) -> fx.Node:
            target = list(meta_value(like).shape)
            return value if target == shape else add_node(aten.view.default, (value, target))

        for node in m.chain[:-1]:
            others = [u for u in node.users if u not in m.chain]
            if others:
                replacement = shaped(before if m.act is not None else result, node)  # type: ignore[arg-type]
                for user in others:
                    user.replace_input_with(node, replacement)
                renamed[node] = replacement
        final = shaped(result, last)
    last.replace_all_uses_with(final)
    renamed[last] = final
    for node in reversed(m.chain):
        graph.erase_node(node)
    return renamed


def _current(m: Match, renamed: dict[fx.Node, fx.Node], claimed: set[fx.Node]) -> Match | None:
    """``m`` with its operands as the graph now names them, after earlier rewrites replaced
    nodes it reads (fc2 reads fc1's activation, which fc1's kernel call replaced); None where
    an earlier rewrite took a node of its chain (``mm1 + mm2``: both GEMMs match the one add)."""
    if any(node in claimed for node in m.chain):
        return None

    def now(node: fx.Node | None) -> fx.Node | None:
        return renamed.get(node, node) if node is not None else None

    return replace(m, a=now(m.a), b=now(m.b), bias=now(m.bias), residual=now(m.residual))


def cutlass_gemms(gm: fx.GraphModule, config: Any, bench: Bench | None = None) -> fx.GraphModule:
    """GEMM chains → CUTLASS calls, or cuBLASLt's epilogue, where the choice rule says so (see the
    module doc)."""
    backends = tuple(getattr(config, "gemm_backends", ()))
    measure = bool(getattr(config, "autotune", False))
    lt_allowed = measure and "aten" in backends
    if "cutlass" not in backends and not lt_allowed:
        return gm
    matches = [m for m in (match(n) for n in list(gm.graph.nodes)) if m is not None]
    with_cutlass = "cutlass" in backends and any(m.cutlass for m in matches) and cutlass_build.available()
    matches = [m for m in matches if (with_cutlass and m.cutlass) or (lt_allowed and lt_applies(m))]
    if not matches:
        return gm
    only = backends == ("cutlass",)
    if not only and not measure:
        return gm  # no measurement: cuBLAS, the known quantity
    device = torch.cuda.get_device_name(meta_value(matches[0].gemm).device) if measure else ""
    path = device_choices_path(config.cache_dir, "cutlass_gemm", device) if measure else None
    stored = load_json(path)
    # what each GEMM needs built: its stored or heuristic configuration, or every candidate to
    # measure; the kernels do not depend on sizes, so GEMMs of one kind share them; all distinct
    # sources compile at once, in parallel, before anything is measured
    plans: list[tuple[Match, list[cutlass_gemm.Spec], list[int], Any]] = []
    aten_bytes = _aten_side_bytes(gm, config, matches) if measure else {}

    def record_key(m: Match) -> str:  # the candidates and ATen's charge are part of what it decided
        candidates = ["cutlass"] * (with_cutlass and m.cutlass) + [CUBLASLT] * (lt_allowed and lt_applies(m))
        return f"{device}|{_key(m)}|{'+'.join(candidates)}|aten_bytes={aten_bytes.get(m.gemm)}"

    for m in matches:
        specs = cutlass_gemm.specs(*m.spec_args()) if with_cutlass and m.cutlass else []
        record = stored.get(record_key(m))
        if not measure:
            plans.append((m, specs, [_heuristic(m)], None))
        elif isinstance(record, dict) and "best" in record and isinstance(record.get("times_ms"), dict):
            plans.append((m, specs, [record["best"]] if isinstance(record["best"], int) else [], record))
        else:
            plans.append((m, specs, list(range(len(specs))), None))
    sources = sorted({specs[i].source() for _, specs, wanted, _ in plans for i in wanted})
    started = time.perf_counter()
    built = dict(zip(sources, cutlass_build.build_all(sources, config.cache_dir))) if sources else {}
    for source, result in built.items():
        if isinstance(result, Exception):
            log.warning("ait_dynamo: a CUTLASS kernel failed to build (%s); the GEMMs that need it keep ATen", result)
    chosen: list[tuple[Match, str]] = []
    to_measure = sum(measure and record is None for _, _, _, record in plans)
    label = "ait: tuning CUTLASS GEMMs" if with_cutlass else "ait: tuning cuBLASLt epilogues"
    bar = gemm_tuning.progress(to_measure, label) if to_measure else None
    for m, specs, wanted, record in plans:
        libraries: list[str | Exception] = [built.get(s.source(), RuntimeError("not built")) if i in wanted
                                            else RuntimeError("not a candidate") for i, s in enumerate(specs)]
        index: int | str | None
        if not measure:
            index = wanted[0]
        elif record is not None:
            index, times = record["best"], record["times_ms"]
        elif time.perf_counter() - started > config.autotune_budget_s:
            log.info("cutlass gemm: tuning budget spent; %s keeps ATen", m.gemm.name)
            continue
        else:
            with real_tensors(), torch.no_grad():
                index, times = _measure(m, libraries, bench or gemm_tuning.do_bench, lt=lt_allowed and lt_applies(m),
                                        moved=aten_bytes.get(m.gemm))
            log.info("cutlass gemm %s: %s", m.gemm.name, times)
            if bar is not None:
                bar.update(1)
            data = load_json(path)
            data[record_key(m)] = {"best": index, "times_ms": times, "aten_bytes": aten_bytes.get(m.gemm)}
            store_json(path, data)
        if measure and index is not None and not only \
                and times.get(CUBLASLT if index == CUBLASLT else _config_name(index), float("inf")) >= times["aten"]:
            index = None  # cuBLAS and ait's epilogue kernel are faster
        if index == CUBLASLT:
            chosen.append((m, CUBLASLT))
        elif isinstance(index, int) and index < len(libraries) and not isinstance(libraries[index], Exception):
            chosen.append((m, libraries[index]))  # type: ignore[arg-type]
    if bar is not None:
        bar.close()
    renamed: dict[fx.Node, fx.Node] = {}
    claimed: set[fx.Node] = set()
    for found, library in chosen:
        m = _current(found, renamed, claimed)  # type: ignore[assignment]
        if m is None:
            continue
        claimed.update(m.chain)
        renamed.update(_rewrite(gm, m, library))
    if chosen:
        gm.graph.lint()
        gm.recompile()
    return gm
