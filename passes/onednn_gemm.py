"""oneDNN GEMMs on the CPU: mm / addmm as ``mkldnn._linear_pointwise`` where a measurement on
this CPU says it is faster, with a following ReLU, GELU, SiLU, sigmoid or tanh folded into it.

On the CPU, where nothing is generated (``fusion`` off), a graph's GEMMs are ATen's ``mm`` /
``addmm``, which run MKL's sgemm: on this project's CPU machine (AMD EPYC, 2 threads, AVX-512)
that reaches about half of what oneDNN's inner-product primitive does on the same shapes in
float32 (ATen / oneDNN 1.8-2.3 from 64 rows up, forward and both backward forms), but is faster
at 8 rows (0.7-0.9), and in bfloat16 either wins by up to 1.6x depending on the shape and form
(``benchmarks/results/cpu/onednn_gemm/measure.txt``). Other CPUs differ, so the choice is measured,
once per shape, layout, dtype, CPU model and thread count, with ``torch.utils.benchmark``, and
kept on disk under ``<cache_dir>/onednn_gemm/``. Option ``onednn_gemms``: ``"auto"`` (measure, on
CPU graphs where nothing is generated), ``"always"`` (every eligible GEMM on a CPU graph; tests use
it), ``"never"``.

What is rewritten: ``mm(a, b)`` and ``addmm(bias, a, b)`` (alpha = beta = 1, a bias of N
elements), fp32 or bf16, static shapes, on CPU tensors: ``_linear_pointwise(a, t(b), bias,
activation)``, where oneDNN's weight is ``t(b)``: ``nn.Linear``'s own weight where ``b`` is its
transpose, as every linear layer hands it over. An activation is folded when it is the GEMM's only
reader (in training the pre-activation is saved for the backward, so it stays apart). oneDNN sums
in another order than MKL (a rounding difference of the size eager's own error), and computes the
folded activation in float32 before rounding a bf16 result once.
"""

from __future__ import annotations

import functools
import logging
import platform
import threading
from typing import Any

import torch
from torch import fx

from ait_dynamo.cache import device_choices_path, load_json, remember_choice
from ait_dynamo.passes.graph_utils import RESHAPES, activation_name, fake_result, meta_value, random_like, real_tensors

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten

# oneDNN only where it takes at most 0.75x ATen's time alone. On the AMD EPYC it took 0.43-0.55x,
# and won as much inside the models. On the 2-core Xeon single layers measured 0.78-0.90x, and
# with the old 0.9x bar which of them took oneDNN changed from compile to compile; in place,
# oneDNN on every layer ran the encoder block at 0.90-0.96x eager against 0.92-1.00x with ATen,
# the MLP at 0.93-0.99x against 0.92-0.95x: no clear win either way, so MKL stays there
# (benchmarks/results/cpu-xeon/encoder_levers/).
_MIN_GAIN = 0.75
# activation name (graph_utils.activation_name) → oneDNN's (attribute, algorithm)
_ACTIVATIONS = {"relu": ("relu", ""), "silu": ("swish", ""), "sigmoid": ("sigmoid", ""), "tanh": ("tanh", ""),
                "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}
_lock = threading.Lock()
_decisions: dict[str, bool] = {}


def _linear() -> Any:
    """oneDNN's linear op, or None in a torch built without it."""
    if not torch.backends.mkldnn.is_available():
        return None
    packet = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return None if packet is None else packet.default


def dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN's linear takes on this CPU: bfloat16 only where oneDNN has bf16 kernels
    for it (an AMD EPYC without AVX-512 refused with "could not create a primitive descriptor")."""
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return (torch.float32, torch.bfloat16) if supported is not None and supported() else (torch.float32,)


def _activation(node: fx.Node) -> tuple[str, str] | None:
    name = activation_name(node)
    return _ACTIVATIONS[name] if name is not None else None


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].op == "call_function" and users[0].args[0] is node else None


def _folded_activation(node: fx.Node) -> tuple[fx.Node | None, fx.Node | None]:
    """(the view in between or None, the activation) that oneDNN can apply to the GEMM's
    result: its only reader, directly or through a view (a linear layer on 3-d input is
    view, addmm, view), else (None, None)."""
    user = _only_user(node)
    view = None
    if user is not None and user.target in RESHAPES:
        view, user = user, _only_user(user)
    if user is None or _activation(user) is None:
        return None, None
    return view, user


def _static_cpu_matrix(value: Any, dtype: torch.dtype) -> bool:
    return (isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dtype == dtype
            and value.dim() == 2 and all(isinstance(s, int) and s > 0 for s in (*value.shape, *value.stride())))


def _operands(node: fx.Node) -> tuple[Any, fx.Node, fx.Node] | None:
    """(bias or None, a, b) of an eligible GEMM, else None."""
    if node.target is aten.mm.default and len(node.args) == 2 and not node.kwargs:
        bias, a, b = None, *node.args
    elif node.target is aten.addmm.default and len(node.args) == 3 \
            and node.kwargs.get("beta", 1) == 1 and node.kwargs.get("alpha", 1) == 1:
        bias, a, b = node.args
    else:
        return None
    out = meta_value(node)
    if not isinstance(out, torch.Tensor) or out.dtype not in dtypes() or out.device.type != "cpu":
        return None
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        return None
    if not (_static_cpu_matrix(meta_value(a), out.dtype) and _static_cpu_matrix(meta_value(b), out.dtype)):
        return None
    if bias is not None:
        value = meta_value(bias) if isinstance(bias, fx.Node) else None
        # oneDNN adds a bias of N elements; a full or broadcast 2-d one stays with addmm
        if not (isinstance(value, torch.Tensor) and value.dtype == out.dtype and tuple(value.shape) == (out.shape[1],)):
            return None
    return bias, a, b


@functools.lru_cache(maxsize=None)
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(node: fx.Node, activation: tuple[str, str] | None) -> str:
    parts = [str(node.target), f"threads={torch.get_num_threads()}"]
    for operand in node.args:
        value = meta_value(operand) if isinstance(operand, fx.Node) else operand
        if isinstance(value, torch.Tensor):
            parts.append(f"{tuple(value.shape)}:{tuple(value.stride())}:{value.dtype}")
    return "|".join(parts + [str(activation)])


def _median_s(fn: Any) -> float:
    from torch.utils import benchmark

    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.02).median


def _measure(node: fx.Node, activation: tuple[str, str] | None, user: fx.Node | None) -> bool:
    """Whether oneDNN (with the activation folded) beats the ATen GEMM and its activation."""
    bias, a, b = (random_like(meta_value(x)) if isinstance(x, fx.Node) else x for x in _operands(node))  # type: ignore[union-attr]
    attribute, algorithm = activation or ("none", "")
    linear = _linear()

    def aten_form() -> Any:
        out = node.target(bias, a, b) if bias is not None else node.target(a, b)
        return user.target(out, *user.args[1:], **user.kwargs) if user is not None else out

    def onednn_form() -> Any:
        return linear(a, b.t(), bias, attribute, [], algorithm)

    with torch.no_grad():
        aten_s, onednn_s = _median_s(aten_form), _median_s(onednn_form)
    log.info("onednn gemm %s%s: aten %.1f us, onednn %.1f us", node.target, f" + {attribute}" if activation else "",
             aten_s * 1e6, onednn_s * 1e6)
    return onednn_s < _MIN_GAIN * aten_s


def decide(node: fx.Node, activation: tuple[str, str] | None, user: fx.Node | None, mode: str, cache_dir: str) -> bool:
    if mode == "always":
        return True
    # the rule is part of the key: a decision stored under another threshold is made again
    key = f"{_cpu_name()}|{_key(node, activation)}|gain={_MIN_GAIN}"
    with _lock:
        if key in _decisions:
            return _decisions[key]
    path = device_choices_path(cache_dir, "onednn_gemm", _cpu_name())
    stored = load_json(path)
    if key in stored:
        choice = bool(stored[key])
    else:
        try:
            with real_tensors():  # the compile runs under the graph's fake mode
                choice = _measure(node, activation, user)
        except RuntimeError as error:  # oneDNN refused this shape or dtype: ATen's GEMM stays
            log.info("onednn gemm %s: not measured (%s); left to ATen", node.target, error)
            choice = False
        remember_choice(path, key, choice)
    with _lock:
        _decisions[key] = choice
    return choice


def _weight(graph: fx.Graph, b: fx.Node) -> fx.Node:
    """oneDNN's [N, K] weight for the GEMM's [K, N] operand ``b``: the tensor ``b`` transposes
    where it is a transpose (``nn.Linear``), else a transposed view of ``b``."""
    if b.target is aten.t.default or (b.target is aten.permute.default and list(b.args[1]) == [1, 0]) \
            or (b.target is aten.transpose.int and sorted(int(d) % 2 for d in b.args[1:3]) == [0, 1]):
        source = b.args[0]
        if isinstance(source, fx.Node) and isinstance(meta_value(source), torch.Tensor) and meta_value(source).dim() == 2:
            return source
    weight = graph.call_function(aten.t.default, (b,))
    weight.meta["val"] = fake_result(aten.t.default, (b,))
    return weight


def onednn_gemms(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """mm / addmm on CPU tensors through oneDNN where it pays (see the module doc)."""
    mode = getattr(config, "onednn_gemms", "auto")
    linear = _linear()
    if mode == "never" or getattr(config, "fusion", True) or linear is None:
        return gm  # where kernels are generated, the GEMM's epilogue fuses into them instead
    graph = gm.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or _operands(node) is None:
            continue
        view, user = _folded_activation(node)
        activation = _activation(user) if user is not None else None
        if not decide(node, activation, user, mode, config.cache_dir):
            continue
        bias, a, b = _operands(node)  # type: ignore[misc]
        attribute, algorithm = activation or ("none", "")
        with graph.inserting_before(node):
            args = (a, _weight(graph, b), bias, attribute, [], algorithm)
            result = graph.call_function(linear, args)
            result.meta["val"] = fake_result(linear, args)
        if user is None:
            node.replace_all_uses_with(result)
        else:
            # the activation's value is the folded result, seen through the view in between
            view_args = (result, *view.args[1:]) if view is not None else ()
            if view is not None:
                with graph.inserting_before(user):
                    result = graph.call_function(view.target, view_args, dict(view.kwargs))
                    result.meta["val"] = fake_result(view.target, view_args, dict(view.kwargs))
            user.replace_all_uses_with(result)
            graph.erase_node(user)
            if view is not None:
                graph.erase_node(view)
        graph.erase_node(node)
        changed = True
        log.info("onednn gemm: %s%s", node.name, f" + {attribute}" if activation else "")
    if changed:
        gm.recompile()  # a transpose left unread goes in the DCE pass after this one
    return gm
