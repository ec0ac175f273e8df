"""oneDNN GEMMs on the CPU (``passes/onednn_gemm.py``): where nothing is generated, mm / addmm run
as ``mkldnn._linear_pointwise`` with a following activation folded in, chosen by measurement
and kept on disk; results against eager and float64, forward and backward."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx

from ait_dynamo import metrics
from ait_dynamo.config import AitConfig
from ait_dynamo.passes import onednn_gemm
from utils import check_compiled, needs_cpu_triton

pytestmark = pytest.mark.skipif(onednn_gemm._linear() is None, reason="this torch has no oneDNN")

ALWAYS = {"fusion": False, "onednn_gemms": "always"}
LINEAR = "mkldnn._linear_pointwise.default"


class Block(nn.Module):
    """Linear-GELU-Linear-ReLU-Linear(no bias) with a residual: every foldable case and one that is not."""

    def __init__(self, width: int = 24, hidden: int = 40, approximate: str = "none"):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.mid = nn.Linear(hidden, hidden)
        self.down = nn.Linear(hidden, width, bias=False)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.up(x), approximate=self.approximate)
        h = torch.relu(self.mid(h))
        return self.down(h) + x


def _externs(kind: str) -> list[str]:
    return next(g for g in metrics.compiled_graphs if g.name.endswith(kind)).externs


BF16 = pytest.param(torch.bfloat16, id="torch.bfloat16", marks=pytest.mark.skipif(
    torch.bfloat16 not in onednn_gemm.dtypes(), reason="oneDNN has no bf16 kernels for this CPU"))


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=str)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_inference_folds_the_activations(dtype, approximate):
    torch.manual_seed(0)
    model = Block(approximate=approximate).to(dtype).eval()
    with torch.no_grad():
        check_compiled(model, torch.randn(3, 7, 24, dtype=dtype), backward=False, options=ALWAYS)
    externs = _externs("inference")
    assert externs.count(LINEAR) == 3, externs
    # GELU and ReLU went into their GEMMs; nothing of ATen's GEMMs is left
    assert not [e for e in externs if "gelu" in e or "relu" in e or "mm" in e], externs


class SeqFirst(nn.Module):
    """Linear layers on a transposed (sequence-first) input, as ``nn.MultiheadAttention``'s packed
    in-projection runs them: ``linear`` decomposes to a copy, mm, a view and an add of the bias."""

    def __init__(self):
        super().__init__()
        self.projection = nn.Linear(12, 18)
        self.activated = nn.Linear(12, 10)
        self.plain = nn.Linear(12, 10, bias=False)

    def forward(self, x: torch.Tensor, other: torch.Tensor):
        seq_first = x.transpose(0, 1)
        return self.projection(seq_first), torch.relu(self.activated(seq_first)), self.plain(seq_first) + other


@pytest.mark.parametrize("dtype", [torch.float32, BF16], ids=str)
def test_the_bias_add_of_a_transposed_input_folds(dtype):
    """oneDNN takes the bias in float32; a bias add followed by an activation folds both; an add
    of a full-size tensor (a residual) is not a bias and stays. In bfloat16 the bias adds stay
    (the pass's ``_bias_add`` says why) and the ReLU stays with them."""
    torch.manual_seed(0)
    model = SeqFirst().to(dtype).eval()
    with torch.no_grad():
        check_compiled(model, torch.randn(3, 5, 12, dtype=dtype), torch.randn(5, 3, 10, dtype=dtype),
                       backward=False, options=ALWAYS)
    externs = _externs("inference")
    adds = externs.count("aten.add.Tensor") + externs.count("aten.add_.Tensor")
    if dtype == torch.float32:
        assert externs.count(LINEAR) == 3, externs
        # the two bias adds and the ReLU are in the linears; the residual's add is still there
        assert adds == 1 and not [e for e in externs if "relu" in e or "mm" in e], externs
    else:
        assert externs.count(LINEAR) == 3 and adds == 3, externs


def test_training_keeps_the_saved_pre_activation_apart():
    """In training the GEMM's result is saved for the activation's backward: the activation stays
    an op of its own; the backward's GEMMs (transposed operands) go through oneDNN as well."""
    torch.manual_seed(0)
    check_compiled(Block(), torch.randn(5, 24, requires_grad=True), options=ALWAYS)
    forward, backward = _externs("forward"), _externs("backward")
    assert forward.count(LINEAR) == 3 and "aten.gelu.default" in forward, forward
    assert backward.count(LINEAR) >= 4 and not [e for e in backward if e.startswith("aten.mm")], backward


def test_odd_shapes_and_a_non_contiguous_operand():
    """Sizes that are no multiple of anything, a batch of one, and a GEMM whose right operand is
    a column slice (not nn.Linear's transposed weight): oneDNN gets a transposed view."""
    torch.manual_seed(0)

    def fn(x, bias, wide):
        w = wide[:, ::2]  # [13, 20], non-contiguous
        return torch.addmm(bias, x, w).sigmoid(), torch.mm(x, w).tanh()

    for rows in (1, 9):
        metrics.reset()
        check_compiled(fn, torch.randn(rows, 13, requires_grad=True), torch.randn(20, requires_grad=True),
                       torch.randn(13, 40, requires_grad=True), options=ALWAYS)
        assert _externs("forward").count(LINEAR) == 2


def test_left_to_aten():
    """A 2-d bias, alpha or beta, float64 and bmm are not oneDNN's linear: untouched."""
    torch.manual_seed(0)

    def fn(x, w, full_bias, x64, w64, batched):
        return (torch.addmm(full_bias, x, w), torch.addmm(full_bias[0], x, w, beta=0.5), torch.mm(x64, w64),
                torch.bmm(batched, batched.transpose(1, 2)))

    check_compiled(fn, torch.randn(6, 5), torch.randn(5, 4), torch.randn(6, 4), torch.randn(6, 5, dtype=torch.float64),
                   torch.randn(5, 4, dtype=torch.float64), torch.randn(2, 3, 5), backward=False, options=ALWAYS)
    assert LINEAR not in _externs("inference")


def test_bf16_stays_with_aten_where_onednn_has_no_bf16_kernels(monkeypatch):
    """A CPU without oneDNN's bf16 kernels refuses ``_linear_pointwise`` in bf16 at run time
    (an AMD EPYC without AVX-512): even when oneDNN is forced, bf16 GEMMs stay with ATen there."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert onednn_gemm.dtypes() == (torch.float32,)
    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(Block().to(torch.bfloat16).eval(), torch.randn(3, 7, 24, dtype=torch.bfloat16),
                       backward=False, options=ALWAYS)
    assert LINEAR not in _externs("inference")


@needs_cpu_triton
def test_nothing_changes_where_kernels_are_generated():
    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(Block().eval(), torch.randn(4, 24), backward=False,
                       options={"fusion": True, "onednn_gemms": "always", "gemm_backends": ("aten",)})
    assert LINEAR not in _externs("inference")


def test_auto_measures_once_and_keeps_the_choice_on_disk(tmp_path, monkeypatch):
    """"auto" times both forms of the graph's GEMMs in their sequence and confirms the winners
    by timing the graph whole; the choices are stored per CPU model and graph, and a later
    compile (a fresh process: the in-memory table cleared) reads them back."""
    measured: list[list[str]] = []
    timed_whole: list[list[list[bool]]] = []
    real_measure, real_best = onednn_gemm._measure_in_sequence, onednn_gemm._best_in_graph

    def counting(found):
        measured.append([str(c.node.target) for c in found])
        return real_measure(found)

    def timing(gm, found, variants):
        timed_whole.append(variants)
        return real_best(gm, found, variants)

    monkeypatch.setattr(onednn_gemm, "_measure_in_sequence", counting)
    monkeypatch.setattr(onednn_gemm, "_best_in_graph", timing)
    monkeypatch.setattr(onednn_gemm, "_decisions", {})
    options = {"fusion": False, "onednn_gemms": "auto", "cache_dir": str(tmp_path)}
    torch.manual_seed(0)
    with torch.no_grad():
        check_compiled(Block().eval(), torch.randn(64, 24), backward=False, options=options)
    assert len(measured) == 1 and len(measured[0]) == 3, measured  # one sequence of three GEMMs
    stored = json.loads(next((tmp_path / "onednn_gemm").glob("*.json")).read_text())
    (choices,) = stored.values()
    assert len(choices) == 3 and all(isinstance(v, bool) for v in choices), stored
    assert len(timed_whole) <= 1
    assert not any(choices) or choices in timed_whole[0], "a set that was not timed in the graph was taken"
    externs = _externs("inference")
    assert externs.count(LINEAR) == sum(choices), (externs, stored)

    onednn_gemm._decisions.clear()
    with torch.no_grad():
        check_compiled(Block().eval(), torch.randn(64, 24), backward=False, options=options)
    assert len(measured) == 1, "the stored choices were measured again"


class _FakeClock:
    """``time.perf_counter`` for the pass: advances only when a timed form says so, so that a
    timing test does not depend on the machine's load (pytest-xdist's workers share the cores)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def form(self, seconds: float):
        def run():
            self.now += seconds
        return run


def test_the_sequence_measurement_times_each_gemm_where_it_runs(monkeypatch):
    """Each GEMM is judged by its own times inside the sequence: a GEMM whose oneDNN form takes
    longer measures above 1, one whose ATen form takes longer below, whichever GEMM it is."""
    gm = make_fx(lambda x, w1, w2: torch.mm(torch.mm(x, w1.t()).relu(), w2.t()), tracing_mode="fake")(
        torch.randn(16, 24), torch.randn(40, 24), torch.randn(8, 40))
    found = onednn_gemm.candidates(gm.graph)
    assert [c.activation for c in found] == [("relu", ""), None]
    clock = _FakeClock()
    # the first GEMM: oneDNN 3 ms against ATen's 1 ms; the second: oneDNN 1 ms against 4 ms
    times = {found[0].node: (1e-3, 3e-3), found[1].node: (4e-3, 1e-3)}

    def timed_forms(candidate, operands):
        aten_s, onednn_s = times[candidate.node]
        return clock.form(aten_s), clock.form(onednn_s)

    monkeypatch.setattr(onednn_gemm, "_forms", timed_forms)
    monkeypatch.setattr(onednn_gemm, "time", clock)
    assert onednn_gemm._measure_in_sequence(found) == pytest.approx([3.0, 0.25])


def test_a_gemm_onednn_refuses_stays_with_aten(tmp_path, monkeypatch):
    """oneDNN may refuse a shape or dtype at run time ("could not create a primitive
    descriptor"): that GEMM has no ratio (it stays with ATen), the others are still measured."""
    gm = make_fx(lambda x, w: torch.mm(x, w.t()).relu() + torch.mm(x, w.t() * 2), tracing_mode="fake")(
        torch.randn(16, 24), torch.randn(40, 24))
    found = onednn_gemm.candidates(gm.graph)
    real_forms = onednn_gemm._forms

    def refusing_the_first(candidate, operands):
        aten_form, onednn_form = real_forms(candidate, operands)
        if candidate is not found[0]:
            return aten_form, onednn_form

        def refused():
            raise RuntimeError("could not create a primitive descriptor")

        return aten_form, refused

    monkeypatch.setattr(onednn_gemm, "_forms", refusing_the_first)
    measured = onednn_gemm._measure_in_sequence(found)
    assert len(found) == 2 and measured[0] is None and measured[1] > 0
    monkeypatch.setattr(onednn_gemm, "_measure_in_sequence", lambda found: measured)
    monkeypatch.setattr(onednn_gemm, "_time_ratios", lambda baseline, variants: [0.5] * len(variants))
    monkeypatch.setattr(onednn_gemm, "_decisions", {})
    assert onednn_gemm.decide(gm, found, "auto", str(tmp_path))[0] is False


def test_the_graph_timed_whole_picks_the_set_of_gemms(tmp_path, monkeypatch):
    """The GEMMs that won in sequence by each bar make candidate sets; the set under which the
    whole graph runs fastest is taken if it pays, and none if no set does."""
    def fn(x, w1, w2):
        return torch.mm(torch.mm(x, w1.t()).relu(), w2.t())

    gm = make_fx(fn, tracing_mode="fake")(torch.randn(16, 24), torch.randn(40, 24), torch.randn(8, 40))
    found = onednn_gemm.candidates(gm.graph)
    monkeypatch.setattr(onednn_gemm, "_measure_in_sequence", lambda found: [0.9, 0.97])
    offered = []

    def timed(baseline, variants, ratios):
        offered.append(len(variants))
        return ratios[:len(variants)]

    cases = [([1.01, 0.9], [True, True]), ([0.9, 0.95], [True, False]), ([0.99, 1.2], [False, False])]
    for index, (ratios, expected) in enumerate(cases):
        monkeypatch.setattr(onednn_gemm, "_time_ratios", lambda b, v, ratios=ratios: timed(b, v, ratios))
        monkeypatch.setattr(onednn_gemm, "_decisions", {})
        assert onednn_gemm.decide(gm, found, "auto", str(tmp_path / str(index))) == expected, ratios
    assert offered == [2, 2, 2]  # {first} at the 0.95 bar, {first, second} at 1.0


def test_untimed_whole_the_sequence_decides(tmp_path, monkeypatch):
    """A graph that cannot be timed whole (``_time_ratios`` gives None, as for too long a call)
    keeps the sequence's verdict at the strictest bar."""
    gm = make_fx(lambda x, w: torch.mm(torch.mm(x, w.t()), w), tracing_mode="fake")(torch.randn(16, 24), torch.randn(40, 24))
    found = onednn_gemm.candidates(gm.graph)
    monkeypatch.setattr(onednn_gemm, "_measure_in_sequence", lambda found: [0.9, 0.97])
    monkeypatch.setattr(onednn_gemm, "_time_ratios", lambda baseline, variants: None)
    monkeypatch.setattr(onednn_gemm, "_decisions", {})
    assert onednn_gemm.decide(gm, found, "auto", str(tmp_path)) == [True, False]


def test_the_graph_timing_runs_every_form_and_leaves_the_random_stream_alone(monkeypatch):
    """The whole-graph timing runs the graph and its rewritten copies (with a random op in them)
    on random inputs; the user's random stream does not move, and the original graph is untouched."""
    def fn(x, w):
        return torch.nn.functional.dropout(torch.mm(x, w.t()).relu(), 0.5, True)

    gm = make_fx(fn, tracing_mode="fake")(torch.randn(16, 24), torch.randn(40, 24))
    found = onednn_gemm.candidates(gm.graph)
    before = gm.code
    state = torch.get_rng_state()
    calls = []
    real_ratios = onednn_gemm._time_ratios

    def recording(baseline, variants):
        ratios = real_ratios(baseline, variants)
        calls.append(ratios)
        return ratios

    monkeypatch.setattr(onednn_gemm, "_time_ratios", recording)
    with onednn_gemm.real_tensors():
        best = onednn_gemm._best_in_graph(gm, found, [[True]])
    assert len(calls) == 1 and len(calls[0]) == 1 and calls[0][0] > 0
    assert best == ([True] if calls[0][0] < onednn_gemm._MIN_GRAPH_GAIN else [False])
    assert torch.equal(torch.get_rng_state(), state)
    assert gm.code == before and "_linear_pointwise" not in gm.code


def test_a_graph_too_large_to_time_whole_is_not_run(monkeypatch):
    """Inputs over _GRAPH_INPUT_BYTES (a large model's weights, made again at random) or a call
    over _GRAPH_CALL_S: the graph is not timed whole, and nothing of it runs past that call."""
    gm = make_fx(lambda x, w: torch.mm(x, w.t()), tracing_mode="fake")(torch.randn(16, 24), torch.randn(40, 24))
    found = onednn_gemm.candidates(gm.graph)
    monkeypatch.setattr(onednn_gemm, "_GRAPH_INPUT_BYTES", 16 * 24 * 4)
    with onednn_gemm.real_tensors():
        assert onednn_gemm._graph_inputs(gm) is None
        assert onednn_gemm._best_in_graph(gm, found, [[True]]) is None
    calls = []

    def slow_baseline():
        calls.append("baseline")
        time.sleep(0.002)

    monkeypatch.setattr(onednn_gemm, "_GRAPH_CALL_S", 0.001)
    assert onednn_gemm._time_ratios(slow_baseline, [lambda: calls.append("variant")]) is None
    assert calls == ["baseline", "baseline"], calls


def test_timing_rounds_are_bounded():
    keep = onednn_gemm._keep_timing
    assert keep(0, 100.0) and keep(2, 100.0)  # three rounds whatever they take
    assert not keep(3, 4 * onednn_gemm._MEASURE_S + 0.1)
    assert keep(onednn_gemm._MIN_ROUNDS - 1, 2 * onednn_gemm._MEASURE_S)
    assert not keep(onednn_gemm._MIN_ROUNDS, 2 * onednn_gemm._MEASURE_S)
    assert keep(onednn_gemm._MIN_ROUNDS, 0.0) and not keep(onednn_gemm._MAX_ROUNDS, 0.0)


def test_a_graph_calling_more_than_aten_is_never_run_at_compile_time():
    """A collective run on one rank alone would hang or pair with another rank's real call, and a
    custom op or a Python function may do anything: such graphs are not timed whole."""
    gm = make_fx(lambda x, w: torch.mm(x, w.t()).relu(), tracing_mode="fake")(torch.randn(16, 24), torch.randn(40, 24))
    assert onednn_gemm._runnable(gm)
    for target in (torch.ops._c10d_functional.wait_tensor.default, print):
        graph = fx.Graph()
        x = graph.placeholder("x")
        graph.output(graph.call_function(target, (x,)))
        assert not onednn_gemm._runnable(fx.GraphModule(torch.nn.Module(), graph)), target
        assert onednn_gemm._graph_inputs(fx.GraphModule(torch.nn.Module(), graph)) is None


def test_a_bad_mode_says_what_is_valid():
    with pytest.raises(ValueError, match="onednn_gemms.*valid values: auto, always, never"):
        AitConfig.create({"onednn_gemms": "sometimes"}, environ={})
