"""Choice by measurement between cuBLAS and the Triton GEMM template (option ``gemm_backends``
with both, ``autotune=True``, CUDA), and between cuDNN and the depthwise-convolution template
(``kernels/depthwise.py``) the same way.

The compile driver plans a graph once with every GEMM the template can compute given to the
template (:func:`choose_gemm_backends`), then measures each GEMM group of that trial plan at the
graph's shapes, dtypes and strides:

* the template: the group's own generated kernel, epilogue included, at its best block
  configuration (``kernels/autotune.py`` measures the candidates of ``kernels/gemm_configs.py``
  and keeps the choice on disk, under the same key its launch site reads later);
* ATen: the GEMM through cuBLAS (``addmm``'s bias included), plus a copy of the bytes that the
  epilogue and prologue ops add to ait's kernels in the plan where every GEMM runs through ATen
  (``kernels/epilogue_cost.py``: they often join a kernel that runs anyway, the next LayerNorm);
  where that plan cannot tell, the bytes of a separate epilogue kernel (the product and the
  epilogue's other inputs read, its outputs written) and of the prologue's casts or scales (their
  sources read, cuBLAS's operands written). A fused pointwise kernel runs at about copy
  bandwidth, and this keeps the measurement to one GEMM and one copy.

Both sides are timed with ``triton.testing.do_bench`` (an L2 flush before each call, one call
enqueued ahead), which sees the larger of a side's host and GPU time: what a step without CUDA
graphs pays. Under the ``cuda_graphs`` option only GPU time counts, so there both sides are
replayed in a CUDA graph (:func:`do_bench_graph`), and the decision is kept under its own key.

The faster wins; the decision is kept on disk per device, measurement, template source (which fixes shapes,
strides, dtypes, epilogue and tf32 setting) and the bytes charged to ATen, under
``<cache_dir>/gemm_choice/``, and the graph is planned again with it. Tuning one graph stops
after ``autotune_budget_s`` seconds: the GEMMs not measured by then take ATen (and are measured
by a later compile). A progress bar (tqdm) appears when tuning takes more than a second.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo.cache import device_choices_path, load_json, load_module, store_json
from ait_dynamo.kernels import depthwise, gemm_choice, runtime
from ait_dynamo.kernels.codegen import STAND_IN_SCALARS, GeneratedKernel, generate_kernel
from ait_dynamo.kernels.epilogue_cost import AtenPlanBytes
from ait_dynamo.kernels.launch_site import LaunchSite
from ait_dynamo.kernels.op_table import HELPERS_SOURCE
from ait_dynamo.passes.graph_utils import random_like, real_tensors
from ait_dynamo.passes.plan import FusionGroup

log = logging.getLogger("ait_dynamo")

Bench = Callable[[Callable[[], Any]], float]
_lock = threading.Lock()
_decisions: dict[str, bool] = {}

_MODULE_HEADER = """import torch
import triton
import triton.language as tl

from ait_dynamo.kernels import tmath
"""


def wanted(config: Any) -> bool:
    """Whether the compile driver measures: both backends allowed, autotune on, CUDA Triton."""
    return (set(config.gemm_backends) >= {"aten", "triton"} and config.autotune
            and runtime.triton_runs_on("cuda"))


def do_bench(fn: Callable[[], Any]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))


def do_bench_graph(fn: Callable[[], Any]) -> float:
    """``fn``'s GPU time: calls captured in a CUDA graph and replayed (no host time, no L2 flush
    between calls), as a step runs under the ``cuda_graphs`` option. Where ``fn`` cannot be
    captured, :func:`do_bench`. Why: a cuDNN convolution's call costs tens of us of host time (the
    H200's micro family: ait's step with cuDNN and one epilogue kernel took 56-116 us of host
    time, 31-40 us with the depthwise template alone), which ``do_bench`` counts."""
    from triton.testing import do_bench_cudagraph

    try:
        return float(do_bench_cudagraph(fn, rep=25, return_mode="median"))
    except Exception as error:  # noqa: BLE001 - an op that cannot be captured: timed as without graphs
        log.info("gemm tuning: not timed in a CUDA graph (%s); timed without", error)
        return do_bench(fn)


class _Names:
    def __init__(self) -> None:
        self.by_node: dict[fx.Node, str] = {}

    def __call__(self, node: fx.Node) -> str:
        return self.by_node.setdefault(node, f"v{len(self.by_node)}")


def _kernel_arguments(group: FusionGroup, kernel: GeneratedKernel, names: _Names) -> tuple[list[Any], list[int]]:
    by_name = {name: node for node, name in names.by_node.items()}
    tensors: dict[str, torch.Tensor] = {}
    for node, buffer in kernel.out_buffers:
        meta = node.meta["val"]
        tensors[buffer] = torch.empty_strided(tuple(meta.shape), tuple(meta.stride()), dtype=meta.dtype,
                                              device=meta.device)
    for name in kernel.args.tensors:
        if name not in tensors:
            tensors[name] = random_like(by_name[name].meta["val"])
    ints: list[int] = []
    for key in kernel.args.ints:
        if key[0] == "size":
            ints.append(int(key[1]))
        elif key[0] in STAND_IN_SCALARS:
            ints.append(STAND_IN_SCALARS[key[0]])  # type: ignore[arg-type]
        else:
            ints.append(int(tensors[key[1]].stride(key[2])))
    return [tensors[name] for name in kernel.args.tensors], ints


def _epilogue_bytes(group: FusionGroup) -> int:
    """Bytes a separate epilogue kernel moves: the product read back, the epilogue's other inputs
    read, its outputs written. ``0`` for a bare GEMM (nothing runs after cuBLAS)."""
    gemm = gemm_choice.gemm_node(group)
    if group.nodes[-1] is gemm:  # no epilogue (prologue ops precede the GEMM)
        return 0
    prologue = group.nodes[:group.nodes.index(gemm)]
    bias, a, b = gemm_choice.operands(gemm)
    others = [n for n in group.inputs if n not in (a, b, bias) and not set(n.users) & set(prologue)]
    written = [n for n in group.outputs if n is not gemm]  # cuBLAS writes the product itself
    values = [gemm.meta["val"]] + [n.meta["val"] for n in others] + [n.meta["val"] for n in written]
    return sum(int(v.numel()) * v.element_size() for v in values)


def _prologue_bytes(group: FusionGroup) -> int:
    """Bytes the separate prologue kernels (casts, scales) move: their sources read, their
    results written (the results are cuBLAS's operands)."""
    gemm = gemm_choice.gemm_node(group)
    prologue = group.nodes[:group.nodes.index(gemm)]
    values = [n.meta["val"] for n in group.inputs if set(n.users) & set(prologue)]
    values += [n.meta["val"] for n in prologue if n.target not in gemm_choice.TRANSPOSES]
    return sum(int(v.numel()) * v.element_size() for v in values)


def aten_side_bytes(group: FusionGroup, aten_plan: AtenPlanBytes | None) -> int:
    """The bytes the ATen side of ``group``'s measurement copies after cuBLAS (module doc)."""
    gemm = gemm_choice.gemm_node(group)
    planned = aten_plan.epilogue_bytes(n for n in group.nodes if n is not gemm) if aten_plan is not None else None
    return planned if planned is not None else _epilogue_bytes(group) + _prologue_bytes(group)


def _no_fallback(*inputs: Any) -> tuple:
    raise AssertionError("a measured template has no ATen fallback: its failure keeps cuBLAS / cuDNN")


def measure_group(group: FusionGroup, cache_dir: str, bench: Bench | None = None,
                  aten_bytes: int | None = None) -> tuple[float, float, str]:
    """(template ms, ATen ms, decision key) for one GEMM group; ``aten_bytes``: what the ATen
    side copies after cuBLAS (default: a separate epilogue kernel's bytes)."""
    bench = bench or do_bench
    names = _Names()
    kernel = generate_kernel(group, names)
    key = kernel.tune_key
    module, _ = load_module(_MODULE_HEADER + "\n" + HELPERS_SOURCE + "\n\n" + kernel.source, cache_dir)
    function = getattr(module, kernel.name)
    tensors, ints = _kernel_arguments(group, kernel, names)
    problem, dtype = kernel.gemm, kernel.gemm_dtype
    assert problem is not None and dtype is not None

    # timed as the generated wrapper runs it: through a launch site, whose first call compiles
    # and (on CUDA) measures the block configurations, and whose later calls go straight to the
    # compiled launcher. The H200 run of 9c17fe4 timed the template through the generic launch
    # path (a tuning lookup and the JIT's argument handling on every call) at up to 3x the time
    # its own configuration measurement gave (MobileNetV3's first depthwise convolution: 0.110
    # against 0.037 ms), where cuDNN's side is one ATen call.
    site = LaunchSite(function, _no_fallback, "tuning", kernel.kind, len(tensors), xnumel=math.prod(kernel.xnumel),
                      gemm=problem, dtype=dtype, tune=key)

    def template() -> Any:
        return site.launch(*tensors, *ints)

    template()
    wrong = _differs_from_aten(group, kernel, names, tensors)
    if wrong is not None:  # a template that computes a wrong value never wins
        what, library = ("depthwise convolution", "cuDNN") if kernel.kind == "conv" else ("GEMM", "cuBLAS")
        warnings.warn(f"ait_dynamo: the Triton {what} template for {gemm_choice.gemm_node(group).name} differs "
                      f"from ATen ({wrong}); {library} runs it", RuntimeWarning, stacklevel=2)
        return float("inf"), 0.0, key
    template_ms = bench(template)
    gemm = gemm_choice.gemm_node(group)
    arguments = [random_like(a.meta["val"]) if isinstance(a, fx.Node) else a for a in gemm.args]
    kwargs = dict(gemm.kwargs)
    moved = aten_side_bytes(group, None) if aten_bytes is None else aten_bytes
    device = next(a for a in arguments if isinstance(a, torch.Tensor)).device
    source = torch.empty(moved // 2, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)

    def aten() -> Any:
        gemm.target(*arguments, **kwargs)
        if moved:
            target.copy_(source)

    aten_ms = bench(aten)
    return template_ms, aten_ms, key


def _differs_from_aten(group: FusionGroup, kernel: GeneratedKernel, names: _Names,
                       tensors: list[torch.Tensor]) -> str | None:
    """What differs when the template's outputs, just computed from ``tensors``, are judged
    against the group's ATen ops on the same inputs and a float64 run of them, by the rule of
    the numerics guard (``verify.compare``); ``None`` if they agree. The measurement has both at
    hand, so a template that is wrong on this device (it is tested on the CPU interpreter) is
    caught before it is chosen. Groups that draw random numbers, or whose inputs cannot be
    rebuilt here, are not judged."""
    from ait_dynamo.passes.graph_utils import is_random
    from ait_dynamo.verify import compare

    if any(is_random(n) for n in group.nodes):
        return None
    by_name = dict(zip(kernel.args.tensors, tensors))
    known = {node: by_name[name] for node, name in names.by_node.items() if name in by_name}
    members = set(group.nodes)

    def run(convert: Callable[[Any], Any]) -> dict[fx.Node, Any] | None:
        values: dict[fx.Node, Any] = {}

        def value(node: fx.Node) -> Any:
            if node in values:
                return values[node]
            if node in known and node not in members:
                values[node] = convert(known[node])
            elif node.op == "call_function" and (node in members or node.target in gemm_choice.TRANSPOSES
                                                  or node in group.inputs):
                args = fx.node.map_arg(node.args, value)
                kwargs = fx.node.map_arg(node.kwargs, value)
                values[node] = node.target(*args, **kwargs)
            else:
                raise LookupError(node.name)
            return values[node]

        try:
            for node in group.nodes:
                value(node)
        except LookupError:
            return None
        return values

    def to_fp64(t: Any) -> Any:
        return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    expected, reference = run(lambda t: t), run(to_fp64)
    if expected is None or reference is None:
        return None
    for node, buffer in kernel.out_buffers:
        ref = reference[node]
        problem = compare(by_name[buffer], expected[node], ref if isinstance(ref, torch.Tensor) else None)
        if problem is not None:
            return f"{node.name}: {problem}"
    return None


def progress(total: int, desc: str = "ait: tuning GEMMs", unit: str = "gemm") -> Any:
    """A tqdm bar that shows itself only after a second; no bar where tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; an offline GPU box may lack it
        return None
    return tqdm(total=total, delay=1.0, desc=desc, unit=unit, leave=False)


def choose_gemm_backends(gm: fx.GraphModule, config: Any, plan_with: Callable[[dict[str, bool]], Any],
                         bench: Bench | None = None, device_name: str | None = None) -> dict[str, bool]:
    """GEMM node name → whether the template is faster, for the GEMMs measured (see the module
    doc). ``plan_with(measured)`` plans the graph; ``bench`` and ``device_name`` are for tests."""
    candidates = [n for n in gm.graph.nodes if n.op == "call_function" and (
        (n.target in gemm_choice.GEMMS and gemm_choice.template_refusal(n) is None)
        or (n.target is torch.ops.aten.convolution.default and depthwise.refusal(n) is None))]
    if not candidates:
        return {}
    trial, _ = plan_with({n.name: True for n in candidates})
    groups = [s for s in trial.steps if isinstance(s, FusionGroup) and s.kind in ("gemm", "conv")]
    if not groups:
        return {}
    aten_plan = AtenPlanBytes(plan_with({n.name: False for n in candidates})[0])
    device = device_name or torch.cuda.get_device_name()
    path = device_choices_path(config.cache_dir, "gemm_choice", device)
    graphs = bool(config.cuda_graphs)  # GPU time only (module doc)
    started = time.perf_counter()
    decisions: dict[str, bool] = {}
    bar = progress(len(groups))
    try:
        for group in groups:
            gemm = gemm_choice.gemm_node(group)
            if time.perf_counter() - started > config.autotune_budget_s:
                log.info("gemm tuning: budget of %.1f s spent; %s keeps cuBLAS", config.autotune_budget_s, gemm.name)
                continue
            try:
                # real tensors: under torch.compile this runs inside Dynamo's fake mode, where
                # the operands made for the measurement would be fake (the H200 run of 2968b3f
                # measured nothing: "Cannot access data pointer of Tensor (e.g. FakeTensor ...)")
                with real_tensors(), torch.no_grad():
                    decisions[gemm.name] = _decide(group, config.cache_dir, device, path, bench,
                                                   aten_side_bytes(group, aten_plan), graphs)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                log.info("gemm tuning: out of memory measuring %s; it keeps cuBLAS", gemm.name)
                continue
            except Exception as error:  # noqa: BLE001 - a template that fails to build keeps cuBLAS
                log.info("gemm tuning: the template failed for %s (%s); it keeps cuBLAS", gemm.name, error)
                decisions[gemm.name] = False
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return decisions


def _decide(group: FusionGroup, cache_dir: str, device: str, path: str, bench: Bench | None,
            aten_bytes: int, graphs: bool = False) -> bool:
    """Whether the template beats cuBLAS for one group: from memory, from disk, or measured;
    ``graphs``: by GPU time alone (the ``cuda_graphs`` option), timed with :func:`do_bench_graph`
    unless ``bench`` is given (tests)."""
    key = f"{device}|{generate_kernel(group, _Names()).tune_key}|aten_bytes={aten_bytes}"
    if graphs:
        key += "|cuda_graphs"
        bench = bench or do_bench_graph
    with _lock:
        if key in _decisions:
            return _decisions[key]
    stored = load_json(path).get(key)
    if isinstance(stored, dict) and isinstance(stored.get("template"), bool):
        faster = stored["template"]
    else:
        template_ms, aten_ms, _ = measure_group(group, cache_dir, bench, aten_bytes)
        faster = template_ms < aten_ms
        log.info("gemm %s (%s): template %.4f ms, ATen %.4f ms", gemm_choice.gemm_node(group).name, key, template_ms, aten_ms)
        data = load_json(path)
        data[key] = {"template_ms": template_ms, "aten_ms": aten_ms, "aten_bytes": aten_bytes, "template": faster,
                     "cuda_graphs": graphs}
        store_json(path, data)
    with _lock:
        _decisions[key] = faster
    return faster
