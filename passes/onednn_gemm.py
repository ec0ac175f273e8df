"""oneDNN GEMMs on the CPU: mm / addmm as ``mkldnn._linear_pointwise`` where a measurement on
this CPU says it is faster, with a following ReLU, GELU, SiLU, sigmoid or tanh folded into it.

On the CPU, where nothing is generated (``fusion`` off), a graph's GEMMs are ATen's ``mm`` /
``addmm``, which run MKL's sgemm. oneDNN's inner-product primitive is faster or slower than MKL
depending on the CPU, the shape, the dtype and what runs around it: on an AVX2-only AMD EPYC it
measured no faster; on the AVX-512 one the main job's GEMMs took 0.72-0.95x of MKL's time, and
their models ran 7-18% faster with it; on a Xeon layers at 0.78-0.90x alone gained nothing in
their models; and on the small Hugging Face models GEMMs faster in sequence made the graph slower
(``benchmarks/results/cpu-epyc/onednn_sequence/``). So the choice is measured in the graph: each
GEMM in the graph's sequence of GEMMs, then the sets of winners in the whole graph (see
:func:`decide`), once per CPU model, thread count and graph, and kept on disk under
``<cache_dir>/onednn_gemm/``. Option ``onednn_gemms``: ``"auto"`` (measure, on CPU graphs where
nothing is generated), ``"always"`` (every eligible GEMM on a CPU graph; tests use it), ``"never"``.

What is rewritten: ``mm(a, b)`` and ``addmm(bias, a, b)`` (alpha = beta = 1, a bias of N
elements), fp32 or bf16, static shapes, on CPU tensors: ``_linear_pointwise(a, t(b), bias,
activation)``, where oneDNN's weight is ``t(b)``: ``nn.Linear``'s own weight where ``b`` is its
transpose, as every linear layer hands it over. In fp32 an mm whose result (or a view of it) only
a bias add of N elements reads takes that add in as its bias (see :func:`_bias_add`). An activation is folded when it is the GEMM's only
reader (in training the pre-activation is saved for the backward, so it stays apart). oneDNN sums
in another order than MKL (a rounding difference of the size eager's own error), and computes the
folded activation in float32 before rounding a bf16 result once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx

from ait_dynamo.cache import device_choices_path, load_json, remember_choice
from ait_dynamo.passes.graph_utils import (RESHAPES, activation_name, copy_graph_module, fake_result, has_static_layout,
                                           meta_value, random_like, real_tensors)
from ait_dynamo.passes.reinplace import IN_PLACE

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten

# Which GEMMs go to oneDNN, in two steps. Each GEMM is timed in its graph's sequence of GEMMs;
# the GEMMs that took less than a bar of ATen's time there, for each bar of _SEQUENCE_BARS, make
# a candidate set. Each set is then timed in the whole graph against the graph as it is, and the
# fastest wins if it takes at most _MIN_GRAPH_GAIN of the graph's time (a margin for the timing's
# noise: the encoder block's graph measured 0.82-0.95x with oneDNN over ten compiles on the EPYC);
# else every GEMM stays with ATen. Two bars, because a GEMM near the bar (the encoder block's QKV
# projection at 0.90-0.96x in sequence) falls on either side from compile to compile, and three
# of the block's four GEMMs on oneDNN gained less than all four.
# (Timed alone, an older rule asked for 0.75x: on the Xeon layers at 0.78-0.90x alone flipped
# from compile to compile and gained nothing inside the models, cpu-xeon/encoder_levers/.)
_SEQUENCE_BARS = (0.95, 1.0)
_MIN_GRAPH_GAIN = 0.98
# timing (_keep_timing): rounds of all forms while under _MEASURE_S seconds, at least
# _MIN_ROUNDS of them while under four times that, at least three, at most _MAX_ROUNDS; random
# operands of their own for each GEMM up to _OPERAND_BYTES. A graph is not timed whole where its
# GEMMs alone take more than _GRAPH_CALL_S a call, or its inputs more than _GRAPH_INPUT_BYTES
# (a large model's weights would be made again at random, and its calls would hold up the compile).
_MIN_ROUNDS, _MAX_ROUNDS, _MEASURE_S = 6, 40, 0.25
_OPERAND_BYTES = 256 << 20
_GRAPH_CALL_S, _GRAPH_INPUT_BYTES = 0.1, 512 << 20


def _keep_timing(rounds: int, elapsed_s: float) -> bool:
    if rounds < 3:
        return True
    if rounds >= _MAX_ROUNDS:
        return False
    return elapsed_s < (4 * _MEASURE_S if rounds < _MIN_ROUNDS else _MEASURE_S)
# activation name (graph_utils.activation_name) → oneDNN's (attribute, algorithm)
_ACTIVATIONS = {"relu": ("relu", ""), "silu": ("swish", ""), "sigmoid": ("sigmoid", ""), "tanh": ("tanh", ""),
                "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}
_lock = threading.Lock()
_decisions: dict[str, list[bool]] = {}


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


def _bias_add(node: fx.Node, result: fx.Node) -> fx.Node | None:
    """The ``add(result, bias)`` whose bias oneDNN can take into an ``mm``: a tensor of N elements
    of the product's dtype, added once (alpha 1). ``nn.MultiheadAttention``'s packed
    in-projection decomposes so (its input is transposed: ``linear`` becomes mm, view, add).
    float32 only: in bfloat16 oneDNN adds the bias before the one rounding where ATen rounds the
    product first, and a random transformer's training step (seed 73 of the ATen-path test) then
    had a gradient element 2.7x as far from float64 as eager's (7.6e-2 against 2.8e-2)."""
    if meta_value(node).dtype != torch.float32:
        return None
    user = _only_user(result)
    if node.target is not aten.mm.default or user is None or user.target is not aten.add.Tensor \
            or len(user.args) != 2 or user.kwargs.get("alpha", 1) != 1:
        return None
    bias = user.args[1]
    value, out = (meta_value(bias) if isinstance(bias, fx.Node) else None), meta_value(node)
    if not (isinstance(value, torch.Tensor) and value.dtype == out.dtype and value.device == out.device
            and tuple(value.shape) == (out.shape[1],)):
        return None
    return user


def _epilogue(node: fx.Node) -> tuple[fx.Node | None, fx.Node | None, fx.Node | None]:
    """(the view in between, a bias add, the activation), each or None, that oneDNN can apply to
    the GEMM's result: each the only reader of what comes before it, in that order (a linear
    layer on 3-d input is view, addmm, view)."""
    view, result = None, node
    user = _only_user(node)
    if user is not None and user.target in RESHAPES:
        view = result = user
    bias_add = _bias_add(node, result)
    if bias_add is not None:
        result = bias_add
    user = _only_user(result)
    activation = user if user is not None and _activation(user) is not None else None
    if bias_add is None and activation is None:
        return None, None, None
    return view, bias_add, activation


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


@dataclass(frozen=True)
class Candidate:
    """An eligible GEMM, and the bias add and activation (seen through ``view``) that oneDNN
    would fold."""

    node: fx.Node
    view: fx.Node | None
    user: fx.Node | None
    bias_add: fx.Node | None = None

    @property
    def activation(self) -> tuple[str, str] | None:
        return _activation(self.user) if self.user is not None else None

    def operands(self) -> tuple[Any, fx.Node, fx.Node]:
        """(bias or None, a, b) as oneDNN takes them: an mm's folded bias add gives the bias."""
        bias, a, b = _operands(self.node)  # type: ignore[misc]
        return (self.bias_add.args[1] if self.bias_add is not None else bias), a, b

    def folded(self) -> str:
        """What oneDNN takes in beside the product, for the log: " + bias + relu", or ""."""
        parts = (["bias"] if self.bias_add is not None else []) + ([self.activation[0]] if self.activation else [])
        return "".join(f" + {part}" for part in parts)


def candidates(graph: fx.Graph) -> list[Candidate]:
    """The graph's eligible GEMMs in graph order."""
    found = []
    for node in graph.nodes:
        if node.op == "call_function" and _operands(node) is not None:
            view, bias_add, user = _epilogue(node)
            found.append(Candidate(node, view, user, bias_add))
    return found


def _key(candidate: Candidate) -> str:
    values = [meta_value(operand) if isinstance(operand, fx.Node) else operand for operand in candidate.node.args]
    layouts = [_layout(value) for value in values if isinstance(value, torch.Tensor)]
    return "|".join([str(candidate.node.target), *layouts, str(candidate.activation), str(candidate.bias_add is not None)])


def _forms(candidate: Candidate, operands: tuple[Any, Any, Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(ATen's GEMM, bias add and activation, oneDNN's linear with them folded) on real operands."""
    node, user = candidate.node, candidate.user
    bias, a, b = operands
    attribute, algorithm = candidate.activation or ("none", "")
    linear, weight = _linear(), b.t()

    # the bias add and the activation as the graph will run them: in place, since each is the only
    # reader of what comes before it (passes/reinplace.py)
    activation = None if user is None else IN_PLACE.get(user.target, user.target)
    added = candidate.bias_add is not None

    def aten_form() -> Any:
        out = node.target(a, b) if added or bias is None else node.target(bias, a, b)
        if added:
            out = out.add_(bias)
        return activation(out, *user.args[1:], **user.kwargs) if activation is not None else out

    def onednn_form() -> Any:
        return linear(a, weight, bias, attribute, [], algorithm)

    return aten_form, onednn_form


def _real_operands(found: list[Candidate]) -> list[tuple[Any, Any, Any]]:
    """Random operands for each GEMM: its own while they fit in _OPERAND_BYTES (a layer's weights
    are its own in the model, and whether they are still in the cache is part of its time), then
    shared with an earlier GEMM of the same shapes."""
    operands: list[tuple[Any, Any, Any]] = []
    by_key: dict[str, tuple[Any, Any, Any]] = {}
    total = 0
    for candidate in found:
        key = _key(candidate)
        if total > _OPERAND_BYTES and key in by_key:
            operands.append(by_key[key])
            continue
        made = tuple(random_like(meta_value(x)) if isinstance(x, fx.Node) else x for x in candidate.operands())
        total += sum(x.untyped_storage().nbytes() for x in made if isinstance(x, torch.Tensor))
        by_key.setdefault(key, made)  # type: ignore[arg-type]
        operands.append(made)  # type: ignore[arg-type]
    return operands


def _measure_in_sequence(found: list[Candidate]) -> list[float | None]:
    """oneDNN's time (with the activation folded) over ATen's (GEMM and activation) for each
    GEMM (None where oneDNN refused it), timed in the graph's sequence: the GEMMs one after
    another in graph order, every GEMM in one form and then every GEMM in the other, alternating
    which form goes first, each call timed where it runs. One loop times them all, each between
    the same neighbours as in the graph. At the main job's shapes these ratios agreed within 0.03
    with each GEMM timed alone (benchmarks/results/cpu-epyc/onednn_sequence/alone_vs_sequence.txt);
    neither predicts the graph well enough on its own (see _best_in_graph)."""
    operands = _real_operands(found)
    usable: list[int] = []
    forms: list[tuple[Callable[[], Any], Callable[[], Any]]] = []
    with torch.no_grad():
        for index, candidate in enumerate(found):
            aten_form, onednn_form = _forms(candidate, operands[index])
            try:
                aten_form(), onednn_form()  # warm-up; oneDNN may refuse a shape or dtype here
            except RuntimeError as error:
                log.info("onednn gemm %s: not measured (%s); left to ATen", candidate.node.name, error)
                continue
            usable.append(index)
            forms.append((aten_form, onednn_form))
        times: tuple[list[list[float]], list[list[float]]] = ([[] for _ in forms], [[] for _ in forms])
        clock = time.perf_counter
        started, rounds = clock(), 0
        while _keep_timing(rounds, clock() - started):
            for which in ((0, 1) if rounds % 2 == 0 else (1, 0)):
                for position, pair in enumerate(forms):
                    begin = clock()
                    pair[which]()
                    times[which][position].append(clock() - begin)
            rounds += 1
    ratios: list[float | None] = [None] * len(found)
    for position, index in enumerate(usable):
        aten_s, onednn_s = statistics.median(times[0][position]), statistics.median(times[1][position])
        ratios[index] = onednn_s / aten_s
        log.info("onednn gemm %s%s in sequence: aten %.1f us, onednn %.1f us", found[index].node.name,
                 found[index].folded(), aten_s * 1e6, onednn_s * 1e6)
    return ratios


def _graph_key(gm: fx.GraphModule) -> str:
    """The stored choices' key: the CPU, its threads, the rule, and the graph (its code and its
    inputs' layouts: what runs around each GEMM is part of its time, see _measure_in_sequence)."""
    inputs = [meta_value(n) for n in gm.graph.nodes if n.op == "placeholder"]
    described = "\n".join([gm.code, *(_layout(value) for value in inputs)])  # the GEMMs' layouts follow from these
    digest = hashlib.sha256(described.encode()).hexdigest()[:24]
    # "bias-add": choices stored before the bias add folded (2e7f968) timed the mm without it
    return (f"{_cpu_name()}|threads={torch.get_num_threads()}|{digest}|bars={_SEQUENCE_BARS},{_MIN_GRAPH_GAIN}"
            "|bias-add")


def _layout(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)}:{tuple(value.stride())}:{value.dtype}:{value.device}"
    return repr(value)


# The op namespaces a graph may call and still be run at compile time on random inputs: ATen's
# own ops touch nothing but their arguments. A collective (``_c10d_functional``, in FSDP2's
# graphs) run on one rank alone would hang or pair with another rank's real call, and a custom
# op may do anything.
_RUNNABLE_NAMESPACES = frozenset({"aten", "prims", "mkldnn"})


def _runnable(gm: fx.GraphModule) -> bool:
    for node in gm.graph.nodes:
        if node.op in ("call_module", "call_method"):
            return False
        if node.op == "call_function":
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                if target.namespace not in _RUNNABLE_NAMESPACES:
                    return False
            elif getattr(target, "__module__", None) != "_operator":
                return False  # higher-order ops, Python functions: not known to be side-effect free
    return True


def _graph_inputs(gm: fx.GraphModule) -> list[torch.Tensor] | None:
    """Random inputs for a timing run of the whole graph, or None where it cannot have them: an
    input of symbolic sizes, not a CPU tensor, not a tensor at all, or more than
    _GRAPH_INPUT_BYTES of them; or a graph that calls something other than ATen (_runnable)."""
    if not _runnable(gm):
        return None
    values = [meta_value(node) for node in gm.graph.nodes if node.op == "placeholder"]
    if not all(has_static_layout(value) and value.device.type == "cpu" for value in values):
        return None
    if sum(value.untyped_storage().nbytes() for value in values) > _GRAPH_INPUT_BYTES:
        return None
    return [random_like(value) for value in values]


def _time_ratios(baseline: Callable[[], Any], variants: list[Callable[[], Any]]) -> list[float] | None:
    """For each variant, the median over rounds of its time over ``baseline``'s, all run in each
    round in turns (the order rotates from round to round); None where one call of
    ``baseline`` takes longer than _GRAPH_CALL_S (the compile would wait too long)."""
    clock = time.perf_counter
    runs = [baseline, *variants]
    baseline()  # warm-up
    begin = clock()
    baseline()
    per_call = clock() - begin
    if per_call > _GRAPH_CALL_S:
        return None
    for run in variants:  # warm-up
        run()
    repeats = max(1, int(0.003 / max(per_call, 1e-6)))
    ratios: list[list[float]] = [[] for _ in variants]
    started, rounds = clock(), 0
    while _keep_timing(rounds, clock() - started):
        spent = [0.0] * len(runs)
        for step in range(len(runs)):
            which = (step + rounds) % len(runs)
            begin = clock()
            for _ in range(repeats):
                runs[which]()
            spent[which] = clock() - begin
        for index in range(len(variants)):
            ratios[index].append(spent[index + 1] / spent[0])
        rounds += 1
    return [statistics.median(r) for r in ratios]


def _best_in_graph(gm: fx.GraphModule, found: list[Candidate], variants: list[list[bool]]) -> list[bool] | None:
    """The variant (which GEMMs go to oneDNN) under which the graph runs fastest, timed whole on
    random inputs against the graph as it is; no GEMM on oneDNN where none takes at most
    _MIN_GRAPH_GAIN of its time. None where the graph cannot be timed so: an input it cannot
    have at random, an op that refuses random values, or too long a call.

    Per GEMM, even in sequence, the measurement misses what runs in between. On the AMD EPYC
    (AVX-512), Llama's gate projections with their SiLU and its LM head took 0.76-0.88x of ATen's
    time in sequence; on oneDNN they made the graph slower (1.39x eager against 1.47x with
    ATen), the profiler giving oneDNN 93 us a call in the graph. The MLP's and encoder block's
    GEMMs, at 0.88-0.94x in sequence, made theirs 7-18% faster
    (benchmarks/results/cpu-epyc/onednn_sequence/README.md)."""
    inputs = _graph_inputs(gm)
    if inputs is None:
        return None
    try:
        rewritten = []
        for chosen in variants:
            copy = copy_graph_module(gm)
            _rewrite(copy, candidates(copy.graph), chosen)
            rewritten.append(copy)
        # the graph's random ops must not move the user's random stream (see graph_utils.random_like)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            ratios = _time_ratios(lambda: gm(*inputs), [lambda copy=copy: copy(*inputs) for copy in rewritten])
    except Exception as error:  # noqa: BLE001 - an op refusing random values, a copy failing: no verdict
        log.info("onednn gemms: the graph was not timed whole (%s: %s)", type(error).__name__, error)
        return None
    if ratios is None:
        return None
    for chosen, ratio in zip(variants, ratios):
        log.info("onednn gemms: the graph with %d of %d GEMMs on oneDNN takes %.3fx its time with ATen's",
                 sum(chosen), len(found), ratio)
    best = min(range(len(variants)), key=lambda index: ratios[index])
    return variants[best] if ratios[best] < _MIN_GRAPH_GAIN else [False] * len(found)


def decide(gm: fx.GraphModule, found: list[Candidate], mode: str, cache_dir: str) -> list[bool]:
    """For each candidate, whether it goes to oneDNN: each GEMM timed in its sequence, the sets
    of winners by each bar timed in the whole graph against the graph as it is; measured once per
    CPU model, thread count and graph, and kept on disk."""
    if mode == "always" or not found:
        return [True] * len(found)
    key = _graph_key(gm)
    with _lock:
        if key in _decisions:
            return list(_decisions[key])
    path = device_choices_path(cache_dir, "onednn_gemm", _cpu_name())
    stored = load_json(path).get(key)
    if isinstance(stored, list) and len(stored) == len(found) and all(isinstance(x, bool) for x in stored):
        choice = list(stored)
    else:
        with real_tensors():  # the compile runs under the graph's fake mode
            ratios = _measure_in_sequence(found)
            # the GEMMs that won in sequence by each bar, each set timed in the graph
            variants: list[list[bool]] = []
            for bar in _SEQUENCE_BARS:
                chosen = [ratio is not None and ratio < bar for ratio in ratios]
                if any(chosen) and chosen not in variants:
                    variants.append(chosen)
            best = _best_in_graph(gm, found, variants) if variants else [False] * len(found)
            # untimed whole, the sequence's verdict at the strictest bar stands
            choice = best if best is not None else [r is not None and r < _SEQUENCE_BARS[0] for r in ratios]
        remember_choice(path, key, choice)
    with _lock:
        _decisions[key] = list(choice)
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


def _rewrite(gm: fx.GraphModule, found: list[Candidate], chosen: list[bool]) -> None:
    """Each chosen GEMM (and its folded bias add and activation) as oneDNN's linear."""
    graph, linear = gm.graph, _linear()
    changed = False
    for candidate, wanted in zip(found, chosen):
        if not wanted:
            continue
        node, view = candidate.node, candidate.view
        bias, a, b = candidate.operands()
        attribute, algorithm = candidate.activation or ("none", "")
        with graph.inserting_before(node):
            args = (a, _weight(graph, b), bias, attribute, [], algorithm)
            result = graph.call_function(linear, args)
            result.meta["val"] = fake_result(linear, args)
        folded = [n for n in (candidate.bias_add, candidate.user) if n is not None]
        if view is not None and folded:
            # the last folded op's value is the linear's result seen through the view in between
            view_args = (result, *view.args[1:])
            with graph.inserting_before(folded[-1]):
                result = graph.call_function(view.target, view_args, dict(view.kwargs))
                result.meta["val"] = fake_result(view.target, view_args, dict(view.kwargs))
        (folded[-1] if folded else node).replace_all_uses_with(result)
        for dead in [*reversed(folded), *([view] if view is not None and folded else []), node]:
            graph.erase_node(dead)
        changed = True
    if changed:
        gm.recompile()  # a transpose left unread goes in the DCE pass after this one


def onednn_gemms(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """mm / addmm on CPU tensors through oneDNN where it pays (see the module doc)."""
    mode = getattr(config, "onednn_gemms", "auto")
    if mode == "never" or getattr(config, "fusion", True) or _linear() is None:
        return gm  # where kernels are generated, the GEMM's epilogue fuses into them instead
    found = candidates(gm.graph)
    chosen = decide(gm, found, mode, config.cache_dir)
    for candidate, wanted in zip(found, chosen):
        if wanted:
            log.info("onednn gemm: %s%s", candidate.node.name, candidate.folded())
    _rewrite(gm, found, chosen)
    return gm
