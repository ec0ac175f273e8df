"""GEMM shape padding: mm / addmm / bmm whose K or N is not a multiple of the tensor cores'
alignment (8 elements for fp16 / bf16, 4 for fp32), and mm / addmm whose first operand is stored
transposed with such an M (its leading dimension), are computed on zero-padded operands, and the
result is a view without the padding.

cuBLAS picks slower kernels for unaligned leading dimensions: GPT-2's LM head (N = 50257) ran
``cutlass_75_tensorop_f16_s1688gemm`` at 0.85 ms a call on the H200 where the padded shape takes
about 0.12 ms (issue #11's profile). Padding costs a copy of the operands, so it is decided by
measurement on the device (``triton.testing.do_bench`` of both forms, at the graph's shapes,
dtypes and strides), once per shape: the choice is kept on disk under ``<cache_dir>/gemm_padding/``.
Option ``pad_gemms``: ``"auto"`` (measure on CUDA; never on other devices), ``"always"``,
``"never"``. Symbolic shapes are left alone, and so is everything when ``gemm_backends`` has no
``"aten"``: the Triton template (``kernels/templates/gemm.py.jinja``) masks ragged K and N, so
the copies would buy nothing. A padded GEMM can still take the template where the backend choice
gives it one (it then multiplies the padded operands: correct, if wasteful).

Each operand is padded in its own memory order (``_pad_matrix``): ``nn.Linear``'s transposed
weight is padded as the contiguous matrix it is, then transposed back, so the copy runs row by
row and cuBLAS reads the result as a transposed operand with an aligned leading dimension.

Zero padding is exact: the padded K columns of A meet padded K rows of B (zeros times zeros add
nothing), and the padded M rows and N columns are sliced away. The result is then copied contiguous, so that
every consumer sees the layout AOTAutograd traced; where the consumer is a generated kernel, the
slice is read in place and the copy fuses into it. The measurement includes that copy.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo.cache import device_choices_path, load_json, remember_choice
from ait_dynamo.passes.graph_utils import fake_result, meta_value, random_like, real_tensors

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten

PAD_MODES = ("auto", "always", "never")
_ALIGN = {torch.float16: 8, torch.bfloat16: 8, torch.float32: 4}
_GEMMS = (aten.mm.default, aten.addmm.default, aten.bmm.default)
_MIN_GAIN = 0.97  # pad only where the padded form is at least 3% faster: a closer call is noise

_lock = threading.Lock()
_decisions: dict[str, bool] = {}


def _static(shape: Any) -> tuple[int, ...] | None:
    values = tuple(shape)
    return values if all(isinstance(v, int) for v in values) else None


def _operands(node: fx.Node) -> tuple[fx.Node | None, fx.Node, fx.Node]:
    if node.target is aten.addmm.default:
        return node.args[0], node.args[1], node.args[2]
    return None, node.args[0], node.args[1]


def _padding(node: fx.Node) -> tuple[int, int, int] | None:
    """(pad of M, pad of K, pad of N) where the GEMM would gain from it, else None. M is padded
    only where A is stored transposed (its leading dimension is M: a weight gradient
    ``mm(dY.t(), X)``, whose dY has GPT-2's 50257 columns, ran ``cutlass_75_..._align1`` for
    586 us on the H200) and the GEMM is a 2-d mm / addmm, whose rows slice off as a contiguous view."""
    if any(not isinstance(a, fx.Node) for a in _operands(node)[1:]):
        return None
    if node.target is aten.addmm.default and (node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1):
        return None
    a, b, out = meta_value(node.args[-2]), meta_value(node.args[-1]), meta_value(node)
    if not all(isinstance(t, torch.Tensor) for t in (a, b, out)):
        return None
    if a.dtype not in _ALIGN or b.dtype != a.dtype or _static(a.shape) is None or _static(b.shape) is None:
        return None
    align = _ALIGN[a.dtype]
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    pad_k, pad_n = (-k) % align, (-n) % align
    pad_m = 0
    if node.target is not aten.bmm.default and _column_major(a):
        bias = _operands(node)[0]
        if bias is None or not isinstance(bias, fx.Node) or meta_value(bias).dim() < 2:  # no bias rows to pad
            pad_m = (-m) % align
    if pad_m == 0 and pad_k == 0 and pad_n == 0:
        return None
    return pad_m, pad_k, pad_n


def _key(node: fx.Node, pads: tuple[int, int, int]) -> str:
    parts = [str(node.target)]
    for operand in _operands(node):
        value = meta_value(operand)
        if isinstance(value, torch.Tensor):
            parts.append(f"{tuple(value.shape)}:{tuple(value.stride())}:{value.dtype}")
    return "|".join(parts + [str(pads)])


def _pads_bias(bias: Any, n: int) -> bool:
    """A bias along N (last dim n) is padded with the GEMM's N; a scalar, 0-dim or broadcast one
    is not."""
    return bias.dim() > 0 and bias.shape[-1] == n


def _measure(node: fx.Node, pads: tuple[int, int, int]) -> bool:
    """Whether pad + GEMM + slice beats the GEMM alone on this device (do_bench medians)."""
    from triton.testing import do_bench

    bias, a, b = (random_like(meta_value(x)) if isinstance(x, fx.Node) else x for x in _operands(node))

    def plain() -> Any:
        return node.target(bias, a, b) if bias is not None else node.target(a, b)

    def padded() -> Any:
        return _padded_gemm(node.target, bias, a, b, pads)

    unpadded_ms = do_bench(plain, warmup=5, rep=25, return_mode="median")
    padded_ms = do_bench(padded, warmup=5, rep=25, return_mode="median")
    log.info("gemm padding %s: %.4f ms unpadded, %.4f ms padded", node.target, unpadded_ms, padded_ms)
    return padded_ms < _MIN_GAIN * unpadded_ms


def _column_major(value: torch.Tensor) -> bool:
    """The last two dims are stored transposed: ``t(W)`` of a contiguous ``W``, as every
    ``nn.Linear`` hands its weight to mm / addmm."""
    rows, cols = value.shape[-2], value.shape[-1]
    return rows > 1 and cols > 1 and value.stride(-2) == 1 and value.stride(-1) >= rows


def _pad_matrix(value: Any, pad_rows: int, pad_cols: int, meta: torch.Tensor, call: Callable[..., Any]) -> Any:
    """``value`` (an operand of the GEMM, ``meta`` its traced value) zero-padded by ``pad_rows``
    rows and ``pad_cols`` columns, copied in its own memory order: a transposed weight is padded
    as the contiguous matrix it is and transposed back (a row-by-row copy, the layout cuBLAS reads
    as a transposed operand), where padding the transposed view would make ``constant_pad_nd``
    write a row-major copy, a transposing pass over the whole weight (GPT-2's LM head: 77 MB a
    call). ``call(target, args)`` runs an op: eagerly for the measurement, as a new graph node
    for the rewrite."""
    if not (pad_rows or pad_cols):
        return value
    if _column_major(meta):
        stored = call(aten.transpose.int, (value, -1, -2))
        padded = call(aten.constant_pad_nd.default, (stored, [0, pad_rows, 0, pad_cols]))
        return call(aten.transpose.int, (padded, -1, -2))
    return call(aten.constant_pad_nd.default, (value, [0, pad_cols, 0, pad_rows]))


def _eager(target: Any, args: tuple) -> Any:
    return target(*args)


def _padded_gemm(target: Any, bias: Any, a: torch.Tensor, b: torch.Tensor, pads: tuple[int, int, int]) -> torch.Tensor:
    """The computation the rewrite inserts, run eagerly (for the measurement)."""
    pad_m, pad_k, pad_n = pads
    m, n = a.shape[-2], b.shape[-1]
    a = _pad_matrix(a, pad_m, pad_k, a, _eager)
    b = _pad_matrix(b, pad_k, pad_n, b, _eager)
    if bias is not None:
        bias = aten.constant_pad_nd.default(bias, [0, pad_n]) if pad_n and _pads_bias(bias, n) else bias
        out = target(bias, a, b)
    else:
        out = target(a, b)
    if pad_m:
        out = aten.slice.Tensor(out, -2, 0, m)  # leading rows of a row-major matrix: contiguous
    return aten.clone.default(aten.slice.Tensor(out, -1, 0, n), memory_format=torch.contiguous_format) if pad_n else out


def decide(node: fx.Node, pads: tuple[int, int, int], mode: str, cache_dir: str) -> bool:
    if mode == "never":
        return False
    if mode == "always":
        return True
    device = meta_value(node).device
    if device.type != "cuda" or not torch.cuda.is_available():
        return False  # no tensor cores to align for
    name = torch.cuda.get_device_name(device)
    key = f"{name}|{_key(node, pads)}"
    with _lock:
        if key in _decisions:
            return _decisions[key]
    path = device_choices_path(cache_dir, "gemm_padding", name)
    stored = load_json(path)
    if key in stored:
        choice = bool(stored[key])
    else:
        try:
            with real_tensors(), torch.no_grad():
                choice = _measure(node, pads)
        except torch.cuda.OutOfMemoryError as error:
            warnings.warn(f"ait_dynamo: out of memory while timing the padding of {node.target} ({error}); "
                          "left unpadded", RuntimeWarning, stacklevel=2)
            torch.cuda.empty_cache()
            return False
        remember_choice(path, key, choice)
    with _lock:
        _decisions[key] = choice
    return choice


def _undone_transpose(target: Any, args: tuple) -> fx.Node | None:
    """The source of ``transpose(t(x))`` on a matrix (a transposed operand padded in its memory
    order), else None."""
    inner = args[0]
    if target is not aten.transpose.int or not isinstance(inner, fx.Node):
        return None
    value = meta_value(inner)
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        return None
    if inner.target is aten.t.default or (inner.target is aten.transpose.int and {inner.args[1] % 2, inner.args[2] % 2} == {0, 1}):
        return inner.args[0]
    return None


def _call(graph: fx.Graph, made: dict[tuple, fx.Node], target: Any, args: tuple) -> fx.Node:
    """A node ``target(*args)``, or the one already made for the same call: two GEMMs of one
    backward pad the same gradient (GPT-2's LM head: ``dY @ W`` pads dY's columns for K, and
    ``dY.t() @ X`` pads them for M), and the copy is made once."""
    source = _undone_transpose(target, args)
    if source is not None:
        return source
    key = (target, repr(args))
    if key not in made:
        node = graph.call_function(target, args)
        node.meta["val"] = fake_result(target, args)
        made[key] = node
    return made[key]


def pad_gemms(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """Pad the M, K and N of GEMMs where a measurement says it pays (see the module doc)."""
    mode = getattr(config, "pad_gemms", "auto")
    if mode == "never" or "aten" not in getattr(config, "gemm_backends", ("aten",)):
        # padding serves cuBLAS; the Triton template masks ragged K and N itself
        return gm
    graph = gm.graph
    changed = False
    made: dict[tuple, fx.Node] = {}
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _GEMMS:
            continue
        pads = _padding(node)
        if pads is None or not decide(node, pads, mode, config.cache_dir):
            continue
        pad_m, pad_k, pad_n = pads
        bias, a, b = _operands(node)
        m, n = meta_value(a).shape[-2], meta_value(b).shape[-1]
        with graph.inserting_before(node):  # a later GEMM that pads the same operand reuses the pad
            call = functools.partial(_call, graph, made)
            a = _pad_matrix(a, pad_m, pad_k, meta_value(a), call)
            b = _pad_matrix(b, pad_k, pad_n, meta_value(b), call)
            if bias is not None and pad_n and isinstance(bias, fx.Node) and _pads_bias(meta_value(bias), n):
                bias = call(aten.constant_pad_nd.default, (bias, [0, pad_n]))
            gemm = call(node.target, (bias, a, b) if bias is not None else (a, b))
            result = gemm
            if pad_m:  # the leading rows of the row-major product: a contiguous view
                result = call(aten.slice.Tensor, (result, -2, 0, m))
            if pad_n:
                # a contiguous copy of the view without the padding: every consumer sees the layout
                # it was traced with (a later view or permute relies on it); the planner folds the
                # view into the consuming kernel, so the copy costs a pass only for a graph output
                sliced = call(aten.slice.Tensor, (result, -1, 0, n))
                contiguous = {"memory_format": torch.contiguous_format}
                result = graph.call_function(aten.clone.default, (sliced,), contiguous)
                result.meta["val"] = fake_result(aten.clone.default, (sliced,), contiguous)
        node.replace_all_uses_with(result)
        graph.erase_node(node)
        changed = True
        log.info("gemm padding: %s M+%d K+%d N+%d", node.name, pad_m, pad_k, pad_n)
    if changed:
        gm.recompile()
    return gm
