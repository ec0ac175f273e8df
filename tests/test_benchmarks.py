"""The benchmark CLI on a CPU: every subcommand's arguments and a tiny run of each, the default
run, correctness failures, the results writer, report, compare, micro cases."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ait_dynamo.kernels.runtime import triton_runs_on

from benchmarks import cli, compare, fusion_bench, partition_bench, profile_gpu, report, train_bench
from benchmarks import run as bench_run
from benchmarks.backends import BACKENDS, Backend
from benchmarks.measure import TimingPolicy, max_relative_error, relative_error, time_interleaved, time_step
from benchmarks.micro import runner as micro_runner
from benchmarks.micro.cases import CASES, FAMILIES, cases_of
from benchmarks.micro.runner import bench
from benchmarks.recording import Recorder, provenance
from benchmarks.vit import VIT_B16_224, VIT_L16_384, VisionTransformer, build_vit
from benchmarks.workloads import WORKLOADS, default_workloads

TINY = ["--scale", "tiny", "--quick", "--warm-compile", "none"]


def _read(path):
    return json.loads(path.read_text())


def test_cpu_default_run_writes_json_markdown_and_plots(tmp_path, capsys):
    # the CPU machine's default run (asked for explicitly: on a CUDA host the default is the GPU set)
    assert bench_run.main(["--device", "cpu", "--scale", "tiny", "--quick", "--out", str(tmp_path)]) == 0
    results = _read(tmp_path / "results.json")
    environment = results["environment"]  # the provenance header
    assert environment["command"] == ("python -m benchmarks run --device cpu --scale tiny --quick --out "
                                      + str(tmp_path))
    assert {"device_name", "torch", "triton", "python", "git_commit", "timestamp"} <= set(environment)
    cpu_workloads = default_workloads(torch.device("cpu"))
    assert {r["workload"] for r in results["results"]} == set(cpu_workloads)
    assert {r["backend"] for r in results["results"]} == {"eager", "ait"}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 for r in results["results"])
    for record in results["results"]:
        if record["backend"] == "ait":
            assert record["compile_cold_s"] > 0 and record["compile_warm_s"] > 0
            assert record["max_rel_error"] <= record["tolerance"]
            assert record["ait_metrics"]["graphs_compiled"] >= 1
            assert record["ait_metrics"]["fallbacks"] == 0
    train = [r for r in results["results"] if r["mode"] == "train"]
    assert train and set(train[0]["phases_ms"]) == {"forward", "backward", "optimizer"}
    # on a CPU, ait is timed interleaved with eager; its speedup is against eager's same window
    for record in results["results"]:
        assert record["timing"].startswith("interleaved with")
        if record["backend"] == "ait":  # the median of 2 per-round ratios (--quick: 2 rounds)
            assert record["speedup_vs_eager"] > 0 and record["eager_same_window_ms"] > 0
    markdown = (tmp_path / "results.md").read_text()
    assert "| simple_mlp | 2 |" in markdown and "## Compile time" in markdown
    assert (tmp_path / "speedup.png").stat().st_size > 0 and (tmp_path / "compile_time.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Latency and speedup over eager" in printed and "tutorial_1024x2048" in printed


def test_every_other_workload_runs_at_tiny_scale(tmp_path):
    others = [name for name, w in WORKLOADS.items()
              if w.suite == "seeds" and name not in default_workloads(torch.device("cpu"))]
    assert bench_run.main([*TINY, "--workload", ",".join(others), "--out", str(tmp_path), "--no-plots"]) == 0
    results = _read(tmp_path / "results.json")["results"]
    assert {r["workload"] for r in results} == set(others)
    assert all(r["status"] == "ok" for r in results)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
def test_the_model_suite_runs_hugging_face_models_at_tiny_scale(tmp_path):
    """The real-model suite's code, on tiny configs (the GPU runs it at the seed scale)."""
    from benchmarks.model_suite import HF_MODELS

    assert bench_run.main([*TINY, "--suite", "models", "--workload", ",".join(
        f"hf_{family}{suffix}" for family in HF_MODELS for suffix in ("", "_train")),
        "--backends", "eager,ait", "--out", str(tmp_path), "--no-plots"]) == 0
    results = _read(tmp_path / "results.json")["results"]
    assert len(results) == 2 * 2 * len(HF_MODELS) and all(r["status"] == "ok" for r in results), results
    assert all(r["accuracy"] == "pass" for r in results if r["backend"] == "ait")
    assert all(r["ait_metrics"]["fallbacks"] == 0 for r in results if r["backend"] == "ait")
    markdown = (tmp_path / "results.md").read_text()
    assert "accuracy vs fp64" in markdown and "kernel ms" in markdown


def _torchvision_loads() -> bool:
    # PyPI's torchvision fails to import beside the CPU build of torch 2.13 ("operator
    # torchvision::nms does not exist"): CI's leg with torch 2.14.1 and torchvision 0.29.1 runs this
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


@pytest.mark.skipif(not _torchvision_loads(), reason="torchvision is not installed or does not load beside this torch")
def test_the_model_suite_runs_torchvision_models_at_tiny_scale(tmp_path, monkeypatch):
    """The suite's CNNs and vision transformers, inference on 32x32 images (their training steps
    take minutes each through Triton's interpreter: the GPU runs those). Kernels run with the
    interpreter's own program size: with the suite's 64-element programs (conftest.py) this test
    took 13 minutes, against 77 s; the kernel tests keep the small programs."""
    from ait_dynamo.kernels import runtime
    from benchmarks.model_suite import TORCHVISION_MODELS

    monkeypatch.setattr(runtime, "INTERPRETER_MAX_XBLOCK", 1 << 16)

    assert bench_run.main([*TINY, "--suite", "models", "--workload", ",".join(f"tv_{name}" for name in TORCHVISION_MODELS),
                           "--backends", "eager,ait", "--out", str(tmp_path), "--no-plots"]) == 0
    results = _read(tmp_path / "results.json")["results"]
    assert len(results) == 2 * len(TORCHVISION_MODELS) and all(r["status"] == "ok" for r in results), results
    assert all(r["accuracy"] == "pass" for r in results if r["backend"] == "ait")
    ait = [r["ait_metrics"] for r in results if r["backend"] == "ait"]
    assert all(m["fallbacks"] == 0 for m in ait) and all(m["generated_kernels"] > 0 for m in ait), ait


def test_suite_selection():
    models = bench_run.parse_args(["--suite", "models", "--device", "cpu"]).workloads
    assert all(WORKLOADS[name].suite == "models" for name in models)
    seeds = bench_run.parse_args(["--device", "cpu"]).workloads
    assert seeds and all(WORKLOADS[name].suite == "seeds" for name in seeds)
    for suite in ("fusion", "micro"):
        names = bench_run.parse_args(["--suite", suite, "--device", "cpu"]).workloads
        assert names and all(WORKLOADS[name].suite == suite for name in names)
    everything = bench_run.parse_args(["--suite", "all", "--device", "cpu"]).workloads
    assert set(seeds + models) < set(everything)


def _broken_backend(factor):
    def compile_broken(fn, built, extra):
        def wrong(*args):
            return fn(*args) * factor

        return wrong

    return Backend("broken", "multiplies the result", compile_broken)


def test_a_wrong_result_fails_the_run_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "broken", _broken_backend(1.5))
    status = bench_run.main([*TINY, "--workload", "simple_mlp", "--backends", "eager,broken", "--out", str(tmp_path),
                             "--no-plots"])
    assert status == 1
    record = next(r for r in _read(tmp_path / "results.json")["results"] if r["backend"] == "broken")
    assert record["status"] == "wrong" and "accuracy check against float64" in record["message"]
    assert record["accuracy"] == "fail" and record["max_rel_error"] > 0.4
    assert "WRONG RESULT" in capsys.readouterr().err
    assert "**WRONG**" in (tmp_path / "results.md").read_text()


def test_a_tiny_numerical_difference_passes(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKENDS, "broken", _broken_backend(1 + 1e-6))
    assert bench_run.main([*TINY, "--workload", "simple_mlp", "--backends", "eager,broken", "--out", str(tmp_path),
                           "--no-plots"]) == 0


def test_a_backend_error_is_recorded_and_fails_the_run(tmp_path, monkeypatch):
    def explode(fn, built, extra):
        raise RuntimeError("compiler exploded")

    monkeypatch.setitem(BACKENDS, "explodes", Backend("explodes", "raises", explode))
    status = bench_run.main([*TINY, "--workload", "simple_mlp,tutorial_1024x2048", "--backends", "eager,explodes",
                             "--out", str(tmp_path), "--no-plots"])
    assert status == 1
    records = _read(tmp_path / "results.json")["results"]
    assert [r["status"] for r in records if r["backend"] == "explodes"] == ["error", "error"]
    assert all(r["status"] == "ok" for r in records if r["backend"] == "eager")


def test_time_budget_records_cases_not_run(tmp_path):
    assert bench_run.main([*TINY, "--workload", "simple_mlp", "--batch", "2,3", "--time-budget", "0.2",
                           "--backends", "eager,ait", "--out", str(tmp_path), "--no-plots"]) == 0
    records = _read(tmp_path / "results.json")["results"]
    assert len(records) == 4
    # the first case always runs (nothing is known about its cost); the second would exceed the budget
    assert [r["status"] for r in records if r["batch"] == 2] == ["ok", "ok"]
    assert [r["status"] for r in records if r["batch"] == 3] == ["not run", "not run"]


def test_plan_is_round_robin_and_batch_overrides_sweep():
    args = bench_run.parse_args(["--workload", "encoder_block,simple_mlp,tutorial_1024x2048", "--scale", "seed"])
    planned = [(w.name, b) for w, b in bench_run.plan_cases(args)]
    assert planned[:3] == [("encoder_block", 1), ("simple_mlp", 1024), ("tutorial_1024x2048", None)]
    assert planned[3:] == [("encoder_block", 32), ("encoder_block", 256)]
    args = bench_run.parse_args(["--workload", "encoder_block,tutorial_1024x2048", "--batch", "7", "--scale", "seed"])
    assert [(w.name, b) for w, b in bench_run.plan_cases(args)] == [("encoder_block", 7), ("tutorial_1024x2048", None)]
    full = bench_run.parse_args(["--workload", "vit_b16_224", "--scale", "seed", "--sweep", "full"])
    assert [b for _, b in bench_run.plan_cases(full)] == [1, 2, 4, 8, 16, 32, 64, 128, 256]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workload", "nope"], "unknown workload 'nope'"),
        (["--backends", "eager,tvm"], "unknown backend 'tvm'"),
        (["--backends", "inductor-reduce-overhead", "--device", "cpu"], "needs a CUDA device"),
        (["--backends", "eager,eager"], "named twice"),
        (["--backends", "inductor+autotune=true"], "only the ait backends take options"),
        (["--backends", "ait+memory_budget"], "is not option=value"),
        (["--backends", "ait+no_such_option=1"], "no_such_option"),
        (["--batch", "1,x"], "comma-separated integers"),
        (["--batch", "0"], ">= 1"),
        (["--suite", "nope"], "invalid choice"),
        (["--time-budget", "0"], "must be > 0"),
    ],
)
def test_bad_arguments_are_rejected_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_run.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --- compare ---------------------------------------------------------------------------------


def _results(times, statuses=None, device="cpu"):
    statuses = statuses or {}
    records = [{"workload": w, "batch": b, "backend": k, "status": statuses.get((w, b, k), "ok"), "median_ms": ms}
               for (w, b, k), ms in times.items()]
    return {"schema": report.SCHEMA, "environment": {"device_name": device}, "results": records}


def _write(path, results):
    path.write_text(json.dumps(results))
    return str(path)


BASE = {("mlp", 8, "eager"): 10.0, ("mlp", 8, "ait"): 5.0, ("tut", None, "ait"): 2.0}


def test_compare_flags_a_workload_more_than_five_percent_slower(tmp_path, capsys):
    new = dict(BASE)
    new[("mlp", 8, "ait")] = 5.0 * 1.06
    status = compare.main([_write(tmp_path / "old.json", _results(BASE)), _write(tmp_path / "new.json", _results(new))])
    assert status == 1
    captured = capsys.readouterr()
    assert "**SLOWER**" in captured.out and "mlp/8/ait" in captured.err


def test_compare_passes_within_five_percent_and_reports_speedups(tmp_path):
    new = {key: ms * 1.04 for key, ms in BASE.items()}
    new[("tut", None, "ait")] = 1.0
    comparisons = compare.compare(_results(BASE), _results(new))
    assert {c.verdict for c in comparisons} == {"same", "faster"}
    assert compare.main([_write(tmp_path / "a.json", _results(BASE)), _write(tmp_path / "b.json", _results(new))]) == 0


def test_compare_threshold_and_backend_filter(tmp_path):
    new = dict(BASE)
    new[("mlp", 8, "eager")] = 11.0  # 10% slower, eager only
    old_path, new_path = _write(tmp_path / "a.json", _results(BASE)), _write(tmp_path / "b.json", _results(new))
    assert compare.main([old_path, new_path]) == 1
    assert compare.main([old_path, new_path, "--threshold", "0.2"]) == 0
    assert compare.main([old_path, new_path, "--backends", "ait"]) == 0


def test_compare_flags_a_result_that_became_wrong_but_not_a_missing_case():
    new = dict(BASE)
    broken = compare.compare(_results(BASE), _results(new, {("mlp", 8, "ait"): "wrong"}))
    assert [c.verdict for c in broken if c.regression] == ["broken"]
    del new[("tut", None, "ait")]
    missing = compare.compare(_results(BASE), _results(new))
    assert [c.verdict for c in missing if c.verdict != "same"] == ["missing"]
    assert not any(c.regression for c in missing)


def test_compare_rejects_bad_input(tmp_path, capsys):
    good = _write(tmp_path / "good.json", _results(BASE))
    (tmp_path / "bad.json").write_text("{not json")
    assert compare.main([good, str(tmp_path / "bad.json")]) == 2
    assert compare.main([good, str(tmp_path / "missing.json")]) == 2
    other = _write(tmp_path / "other.json", _results({("vit", 1, "ait"): 1.0}))
    assert compare.main([good, other]) == 2
    assert "no measurement in common" in capsys.readouterr().err
    with pytest.raises(ValueError, match="threshold"):
        compare.compare(_results(BASE), _results(BASE), threshold=-1)


# --- report ----------------------------------------------------------------------------------


def test_report_regenerates_markdown_and_plots_from_json(tmp_path):
    results = _results(BASE)
    for record in results["results"]:
        record.update(input="8x16", precision="float32", phases_ms={"forward": record["median_ms"]}, iters=10)
    results["results"][1].update(compile_cold_s=1.5, compile_warm_s=0.2,
                                 ait_metrics={"graphs_compiled": 1, "generated_kernels": 2, "extern_calls": 3,
                                              "fallbacks": 0, "fallback_reasons": []})
    source = _write(tmp_path / "in.json", results)
    assert report.main([source, "--out", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| mlp | 8 | 8x16 | float32 | 10.000 ms | 5.000 ms (2.00x) |" in markdown
    assert "| mlp | 8 | 1 | 2 | - | 3 | 0 | - |" in markdown
    assert (tmp_path / "out" / "speedup.png").exists() and (tmp_path / "out" / "compile_time.png").exists()
    assert _read(tmp_path / "out" / "results.json")["results"] == results["results"]


def test_report_merge_keeps_the_later_measurement_but_not_a_case_that_did_not_run():
    first = _results(BASE)
    second = _results({("mlp", 8, "ait"): 4.0, ("tut", None, "ait"): 9.0}, {("tut", None, "ait"): "not run"})
    merged = report.merge_results([first, second])
    times = {report.case_key(r): r["median_ms"] for r in merged["results"]}
    assert times == {("mlp", 8, "eager"): 10.0, ("mlp", 8, "ait"): 4.0, ("tut", None, "ait"): 2.0}
    assert len(merged["environment"]["merged_runs"]) == 2


def test_report_rejects_files_that_are_not_results(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a benchmark results file"):
        report.load_results(path)
    path.write_text(json.dumps({"schema": 99, "results": []}))
    with pytest.raises(ValueError, match="schema"):
        report.load_results(path)


def test_device_slug():
    assert report.device_slug("NVIDIA H200") == "nvidia-h200"
    assert report.device_slug("cpu") == "cpu"


# --- measurement primitives --------------------------------------------------------------------


def test_relative_error():
    x = torch.randn(100, dtype=torch.float16)
    assert relative_error(x, x) == 0.0
    assert math.isclose(relative_error(x * 1.1, x), 0.1, rel_tol=1e-2)
    assert relative_error(x[:10], x) == math.inf
    assert relative_error(torch.full((3,), float("nan")), torch.ones(3)) == math.inf
    assert max_relative_error([x], [x, x]) == math.inf


def test_time_step_reports_every_phase():
    class TwoPhases:
        phases = ("a", "b")
        calls = 0

        def run(self, mark):
            self.calls += 1
            mark()
            mark()

    step = TwoPhases()
    policy = TimingPolicy(warmup_s=0.0, min_warmup_iters=2, measure_s=0.0, min_iters=4, max_iters=4)
    timing = time_step(step, torch.device("cpu"), policy)
    assert timing.iters == 4 and step.calls == 6 and set(timing.phases_ms) == {"a", "b"}


class _ClockStep:
    """A step that takes ``ms`` of a fake clock, times the machine's slowdown, and notes the
    order in which steps ran."""

    phases = ("forward",)

    def __init__(self, name, ms, clock, log):
        self.name, self.ms, self.clock, self.log = name, ms, clock, log

    def run(self, mark):
        self.clock["now"] += self.ms * self.clock.get("slowdown", 1.0) / 1e3
        self.log.append(self.name)
        if len(self.log) == self.clock.get("slow_after", -1):
            self.clock["slowdown"] = 2.0  # the machine halves its speed from here on
        mark()


def test_time_interleaved_alternates_rounds_and_shares_the_drift(monkeypatch):
    """Rounds alternate the order (ABBA), each step runs the same number of iterations per
    round, and a machine that slows down during the measurement slows every step alike: each
    round compares like with like."""
    from benchmarks import measure

    clock, log = {"now": 0.0}, []
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    fast, slow = _ClockStep("fast", 2.0, clock, log), _ClockStep("slow", 4.0, clock, log)
    policy = TimingPolicy(warmup_s=0.0, min_warmup_iters=1, measure_s=0.2, min_iters=2, max_iters=200,
                          round_s=0.008, min_rounds=10)
    fast_timing, slow_timing = time_interleaved([fast, slow], torch.device("cpu"), policy)
    # warm-up: 1 each; then 4 iterations of fast and 2 of slow per round (about 8 ms each)
    timed = log[2:]
    rounds = len(fast_timing.round_ms)
    assert rounds == len(slow_timing.round_ms) >= 10
    assert fast_timing.iters == 4 * rounds and slow_timing.iters == 2 * rounds
    assert timed[:12] == ["fast"] * 4 + ["slow"] * 2 + ["slow"] * 2 + ["fast"] * 4
    assert math.isclose(slow_timing.median_ms / fast_timing.median_ms, 2.0)

    # the machine slows down between rounds 4 and 5 (the 2 warm-up runs and 4 rounds of 6 steps)
    clock.update(now=0.0, slowdown=1.0, slow_after=2 + 4 * 6)
    log.clear()
    fast_timing, slow_timing = time_interleaved([fast, slow], torch.device("cpu"), policy)
    ratios = [s / f for f, s in zip(fast_timing.round_ms, slow_timing.round_ms)]
    assert all(math.isclose(r, 2.0) for r in ratios)  # every round compares like with like
    assert math.isclose(max(fast_timing.round_ms), 2 * min(fast_timing.round_ms))  # though the machine drifted


def test_harness_speedup_is_the_median_of_the_per_round_ratios(monkeypatch):
    """On a CPU the harness times a compiled backend interleaved with eager's step; with the
    machine halving its speed mid-measurement, each round still says 2x, and so does the record."""
    from benchmarks import harness, measure

    clock, log = {"now": 0.0, "slowdown": 1.0, "slow_after": 2 + 4 * 6}, []
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock["now"])
    eager, compiled = _ClockStep("eager", 4.0, clock, log), _ClockStep("ait", 2.0, clock, log)
    settings = harness.Settings(torch.device("cpu"), "tiny", [])
    runner = harness.CaseRunner(settings)
    runner.policy = TimingPolicy(warmup_s=0.0, min_warmup_iters=1, measure_s=0.2, min_iters=2, max_iters=200,
                                 round_s=0.008, min_rounds=10)
    runner._eager_partner = eager
    record = {}
    timing = runner._time(compiled, record, None)
    assert record["speedup_vs_eager"] == pytest.approx(2.0)
    assert record["speedup_round_quartiles"] == pytest.approx([2.0, 2.0])
    assert record["timing"] == f"interleaved with eager, {len(timing.round_ms)} rounds"
    eager_record = {}
    runner._time(eager, eager_record, None)  # eager's own record: the median of its windows
    assert eager_record["timing"] == "interleaved with 1 compiled backend(s)"


def test_interleave_option_times_cuda_backends_beside_eager_and_takes_the_peak_alone(monkeypatch):
    """``--interleave`` turns the CPU's timing on for CUDA: the option reaches the settings, the
    runner interleaves, and the peak memory is read after the step ran alone (the allocator's
    statistics started afresh, then the step twice), not over a window eager's iterations shared."""
    from benchmarks import harness, measure

    parser = argparse.ArgumentParser()
    harness.add_case_arguments(parser)
    for argv, asked in ((["--device", "cpu", "--interleave"], True), (["--device", "cpu"], False)):
        args = parser.parse_args(argv)
        harness.resolve_case_arguments(args, parser, lambda device: ["simple_mlp"], lambda device: ["eager", "ait"])
        assert harness.settings_from(args).interleave is asked
    cuda = torch.device("cuda")
    assert harness.CaseRunner(harness.Settings(cuda, "tiny", [], interleave=True))._interleaves()
    assert not harness.CaseRunner(harness.Settings(cuda, "tiny", []))._interleaves()
    assert harness.CaseRunner(harness.Settings(torch.device("cpu"), "tiny", []))._interleaves()

    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))

    class Step:
        phases = ("all",)

        def run(self, mark):
            events.append("step")
            mark()

    measure.peak_of_step_alone(Step(), cuda)
    assert events == ["sync", "empty", "reset", "step", "sync", "step", "sync"]
    events.clear()
    measure.peak_of_step_alone(Step(), torch.device("cpu"))  # no device memory to measure
    assert events == []


def test_time_interleaved_smoke_policy_runs_the_fewest_iterations():
    clock, log = {"now": 0.0}, []
    steps = [_ClockStep("a", 1.0, clock, log), _ClockStep("b", 1.0, clock, log)]
    timings = time_interleaved(steps, torch.device("cpu"), TimingPolicy.for_device(torch.device("cpu"), quick=True))
    assert [t.iters for t in timings] == [2, 2] and len(log) == 2 + 4


def test_report_takes_the_interleaved_speedup_and_shows_its_spread():
    results = {"schema": report.SCHEMA, "environment": {"device_name": "cpu"}, "results": [
        {"workload": "w", "batch": 1, "backend": "eager", "status": "ok", "median_ms": 10.0},
        {"workload": "w", "batch": 1, "backend": "ait", "status": "ok", "median_ms": 8.0,
         "speedup_vs_eager": 1.1, "speedup_round_quartiles": [1.05, 1.15]},
    ]}
    assert report.speedups(results)[("w", 1, "ait")] == 1.1  # not 10 / 8: another window
    assert "8.000 ms (1.10x, rounds 1.05-1.15)" in report.speedup_table(results)


def test_cuda_event_timing_logic_with_fake_events(monkeypatch):
    """The CUDA path of the timer (events between phases), run here with stand-in events."""
    clock = {"now": 0.0}

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing
            self.at = None

        def record(self):
            clock["now"] += 1.5
            self.at = clock["now"]

        def elapsed_time(self, end):
            return end.at - self.at

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    # between warm-up and measurement the timer starts the allocator's peak afresh
    peak_resets = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: peak_resets.append(device))

    class ThreePhases:
        phases = ("forward", "backward", "optimizer")

        def run(self, mark):
            for _ in self.phases:
                clock["now"] += 1.0
                mark()

    policy = TimingPolicy(warmup_s=0.0, min_warmup_iters=1, measure_s=0.0, min_iters=3, max_iters=3)
    timing = time_step(ThreePhases(), torch.device("cuda"), policy)
    assert timing.phases_ms == {"forward": 2.5, "backward": 2.5, "optimizer": 2.5}
    assert timing.median_ms == 7.5 and timing.iters == 3
    assert len(peak_resets) == 1

    class MarksTooOften:
        phases = ("forward",)

        def run(self, mark):
            mark()
            mark()

    with pytest.raises(RuntimeError, match="more phases"):
        time_step(MarksTooOften(), torch.device("cuda"), policy)


# --- the ViT and the micro-benchmark cases -----------------------------------------------------


@pytest.mark.parametrize("config, parameters", [(VIT_B16_224, 86_567_656), (VIT_L16_384, 304_715_752)])
def test_in_repo_vit_has_timm_shapes(config, parameters):
    with torch.device("meta"):
        model = VisionTransformer(config)
    # timm's vit_base_patch16_224 and vit_large_patch16_384 have exactly these parameter counts
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert model.pos_embed.shape == (1, config.tokens, config.dim)


def test_build_vit_without_timm_is_in_repo():
    model, source = build_vit(dataclasses.replace(VIT_B16_224, depth=1, dim=64, heads=2), prefer_timm=False)
    assert source == "in-repo" and isinstance(model, VisionTransformer)
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


class FakeBenchmark:
    """pytest-benchmark's fixture, as far as ``bench`` uses it."""

    def __init__(self):
        self.extra_info, self.group, self.calls = {}, None, 0

    def pedantic(self, target, args, warmup_rounds, rounds, iterations):
        self.calls += 1
        target(*args)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_micro_case_compiles_correctly_with_ait(case):
    """The pytest-benchmark body: the harness builds and checks the case, then the fixture times it."""
    fake = FakeBenchmark()
    bench(fake, case, "ait", device=torch.device("cpu"), scale="tiny")
    assert fake.calls == 1 and fake.group == case.name and fake.extra_info["backend"] == "ait"


def test_micro_body_rejects_a_wrong_result(monkeypatch):
    monkeypatch.setitem(BACKENDS, "broken", _broken_backend(1.5))
    with pytest.raises(AssertionError, match="gemm_epilogue/linear_gelu with broken: wrong"):
        bench(FakeBenchmark(), cases_of("gemm_epilogue")[0], "broken", device=torch.device("cpu"), scale="tiny")
    assert {case.name.split("/")[0] for case in CASES} == set(FAMILIES)
    with pytest.raises(ValueError, match="unknown kernel family"):
        cases_of("conv")


def test_micro_runner_writes_its_table(tmp_path):
    assert micro_runner.main(["--scale", "tiny", "--quick", "--backends", "eager,ait", "--families", "reduction",
                              "--device", "cpu", "--out", str(tmp_path)]) == 0
    data = _read(tmp_path / "micro.json")
    assert data["environment"]["command"].startswith("python -m benchmarks micro ")
    rows = data["results"]
    assert {(r["workload"], r["backend"]) for r in rows} == {(c.name, b) for c in cases_of("reduction")
                                                             for b in ("eager", "ait")}
    assert all(r["status"] == "ok" and r["accuracy"] == "pass" for r in rows if r["backend"] == "ait")
    assert "reduction/scaled_softmax" in (tmp_path / "micro.md").read_text()


# --- one CLI: python -m benchmarks <subcommand> --------------------------------------------------


def test_no_subcommand_is_the_main_job():
    for argv in ([], ["--workload", "simple_mlp"], ["run", "--workload", "simple_mlp"]):
        module, args = cli.parse_args(argv)
        assert module is bench_run and args.command == "run"
    assert cli.parse_args(["--workload", "simple_mlp", "--device", "cpu"])[1].workloads == ["simple_mlp"]


def test_every_subcommand_parses_its_arguments(tmp_path):
    results = _write(tmp_path / "r.json", _results(BASE))
    cases = {
        "train": ["--out", "x", "--device", "cpu", "--budgets", "0.5,1GiB"],
        "fusion": ["--out", "x", "--device", "cpu", "--only", "softmax"],
        "micro": ["--device", "cpu", "--families", "reduction"],
        "profile": ["--out", "x", "--device", "cpu", "--workload", "simple_mlp", "--backends", "eager,ait+autotune=1"],
        "partition": ["--layers", "2", "--dim", "8"],
        "ddp": ["--out", "x", "--device", "cpu", "--backends", "ait,eager"],
        "report": [results, results],
        "compare": [results, results, "--threshold", "0.1"],
        "cutlass": ["--out", "x", "--only", "mlp001_fc1_gelu"],
    }
    assert set(cases) | {"run"} == set(cli.COMMANDS)
    parsed = {name: cli.parse_args([name, *argv]) for name, argv in cases.items()}
    for name, (module, args) in parsed.items():
        assert module.__name__ == cli.COMMANDS[name].module and args.command == name
        assert args.command_line == "python -m benchmarks " + " ".join([name, *cases[name]])
    train = parsed["train"][1]
    assert [s.label for s in train.specs] == ["eager", "ait", "ait+memory_budget=0.5", "ait+memory_budget=1GiB"]
    assert all(WORKLOADS[name].mode == "train" for name in train.workloads)
    assert parsed["fusion"][1].workloads and all("softmax" in name for name in parsed["fusion"][1].workloads)
    assert [c.name for c in cases_of("reduction")] == parsed["micro"][1].workloads
    assert parsed["profile"][1].specs[1].options == {"autotune": "1"}
    assert parsed["ddp"][1].backends == ["eager", "ait"] and parsed["ddp"][1].world == 2
    assert len(parsed["report"][1].results["results"]) == len(BASE)
    assert parsed["cutlass"][1].only == "mlp001_fc1_gelu"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trian"], "invalid choice: 'trian'"),
        (["train", "--out", "x", "--device", "cpu", "--workload", "simple_mlp"], "not a training step"),
        (["train", "--out", "x", "--device", "cpu", "--sweep-backends", "eager"], "only the ait backends take options"),
        (["train", "--out", "x", "--device", "cpu", "--budgets", "lots"], "memory_budget"),
        (["train", "--device", "cpu"], "--out"),
        (["fusion", "--out", "x", "--device", "cpu", "--only", "conv2d"], "matches no workload"),
        (["micro", "--device", "cpu", "--families", "conv"], "unknown family 'conv'"),
        (["profile", "--out", "x", "--device", "cpu", "--workload", "resnet"], "unknown workload 'resnet'"),
        (["partition", "--layers", "0"], "--layers must be >= 1"),
        (["partition", "--dim", "6"], "multiple of 4"),
        (["ddp", "--out", "x", "--device", "cpu", "--batch", "0"], "--batch must be >= 1"),
        (["report", "missing.json"], "cannot read benchmark results"),
        (["compare", "only_one.json"], "the following arguments are required: new"),
        (["cutlass", "--out", "x", "--only", "gemm_9"], "unknown problem(s) gemm_9"),
    ],
)
def test_every_subcommand_rejects_bad_input_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("module_name, command", [
    ("benchmarks.run", "run"), ("benchmarks.train_bench", "train"), ("benchmarks.fusion_bench", "fusion"),
    ("benchmarks.profile_gpu", "profile"), ("benchmarks.partition_bench", "partition"),
    ("benchmarks.ddp_bench", "ddp"), ("benchmarks.report", "report"), ("benchmarks.compare", "compare"),
    ("benchmarks.micro.runner", "micro"),
])
def test_old_module_paths_are_the_subcommands(module_name, command, monkeypatch):
    module = importlib.import_module(module_name)
    called = []
    monkeypatch.setattr(cli, "main", lambda argv: called.append(argv) or 0)
    assert module.main(["--flag", "value"]) == 0
    assert called == [[command, "--flag", "value"]]


def test_python_dash_m_benchmarks_lists_the_subcommands_without_torch():
    # the top level and report/compare import no torch: their help is instant
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert done.returncode == 0
    assert all(name in done.stdout for name in cli.COMMANDS)
    done = subprocess.run([sys.executable, "-c", "import sys; from benchmarks import cli; cli.parse_args(['compare', "
                           "'a', 'b']); print('torch' in sys.modules)"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_recorder_replaces_a_record_of_the_same_case_and_writes_provenance(tmp_path):
    recorder = Recorder(tmp_path / "r.json", provenance("python -m benchmarks x", "cpu", scale="tiny"))
    recorder.put([{"workload": "w", "batch": 1, "backend": "ait", "status": "not run"}])
    recorder.put([{"workload": "w", "batch": 1, "backend": "ait", "status": "ok", "median_ms": 2.0},
                  {"workload": "w", "batch": 2, "backend": "ait", "status": "ok", "median_ms": 3.0}])
    data = report.load_results(tmp_path / "r.json")
    assert [r["status"] for r in data["results"]] == ["ok", "ok"]
    environment = data["environment"]
    assert environment["command"] == "python -m benchmarks x" and environment["scale"] == "tiny"
    assert environment["python"] == platform.python_version() and environment["torch"] == torch.__version__
    assert len(environment["git_commit"]) == 40 or environment["git_commit"] == "unknown"


def test_train_runs_backends_and_a_budget_sweep_and_report_reads_it(tmp_path):
    assert train_bench.main(["--scale", "tiny", "--quick", "--device", "cpu", "--backends", "eager,ait",
                             "--budgets", "0.5", "--out", str(tmp_path)]) == 0
    records = {r["backend"]: r for r in _read(tmp_path / "train_bench.json")["results"]}
    assert set(records) == {"eager", "ait", "ait+memory_budget=0.5"}
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and r["mode"] == "train" for r in records.values())
    budgeted = records["ait+memory_budget=0.5"]
    assert budgeted["accuracy"] == "pass"
    # a budget never saves more; without the interpreter the CPU's ait keeps the default partition
    # by design (no partition report, nothing to compare)
    if triton_runs_on("cpu"):
        assert 0 < budgeted["saved_mib"] <= records["ait"]["saved_mib"]
    assert "| ait+memory_budget=0.5 | 0.5 |" in (tmp_path / "train_bench.md").read_text()
    assert (tmp_path / "budget_sweep.png").stat().st_size > 0
    assert report.main([str(tmp_path / "train_bench.json"), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    assert "ait+memory_budget=0.5" in (tmp_path / "report" / "results.md").read_text()


def test_fusion_reports_bandwidth(tmp_path):
    assert fusion_bench.main(["--scale", "tiny", "--quick", "--device", "cpu", "--backends", "eager,ait",
                              "--workload", "layer_norm_4096x4096_float32", "--out", str(tmp_path)]) == 0
    data = _read(tmp_path / "fusion_bench.json")
    assert data["environment"]["copy_gbps"] > 0
    for record in data["results"]:
        assert record["status"] == "ok" and record["gbps"] > 0 and record["copy_fraction"] > 0
        assert record["input"] == "4x32 float32"  # the tiny scale's shape, under the seed-scale name
    assert "| layer_norm_4096x4096_float32 | 4x32 float32 | ait |" in (tmp_path / "fusion_bench.md").read_text()


def test_profile_writes_a_table_per_workload_and_backend(tmp_path):
    assert profile_gpu.main(["--scale", "tiny", "--device", "cpu", "--workload", "tutorial_1024x2048",
                             "--backends", "eager,ait", "--host", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "tutorial_1024x2048_ait.txt").read_text()
    assert "host enqueue per step" in text and "aten::" in text and "host profile over" in text
    records = _read(tmp_path / "profile.json")["results"]
    assert [r["backend"] for r in records] == ["eager", "ait"] and all(r["status"] == "ok" for r in records)
    assert records[1]["accuracy"] == "pass" and records[1]["host_ms"] > 0
    assert (tmp_path / "ait_debug" / "tutorial_1024x2048").is_dir()  # ait's generated code, for the frames


def test_partition_times_each_partitioner(tmp_path, capsys):
    assert partition_bench.main(["--layers", "1", "--dim", "8", "--repeat", "1", "--out", str(tmp_path)]) == 0
    records = _read(tmp_path / "partition_bench.json")["results"]
    assert [r["backend"] for r in records] == ["ait min_cut (scipy)", "ait min_cut (networkx)",
                                               "functorch min_cut (networkx)"]
    assert all(r["median_ms"] > 0 and r["saved_bytes"] > 0 for r in records)
    assert "| ait min_cut | scipy |" in capsys.readouterr().out


def test_host_time_is_cuda_only():
    from benchmarks.measure import host_time

    class Step:
        phases = ("all",)

        def run(self, mark):
            mark()

    assert host_time(Step(), torch.device("cpu")) is None


@pytest.mark.gpu
def test_host_time_counts_launches_and_enqueue_time():
    from benchmarks.measure import host_time

    x = torch.randn(1024, device="cuda")

    class Step:
        phases = ("all",)

        def run(self, mark):
            for _ in range(5):
                torch.sin(x, out=x)
            mark()

    host = host_time(Step(), torch.device("cuda"))
    assert host is not None and host.launches == 5 and host.enqueue_us > 0
    assert host.us_per_launch == pytest.approx(host.enqueue_us / 5)


@pytest.mark.gpu
def test_interleaved_cuda_run_records_per_round_speedups_and_each_peak(tmp_path):
    assert bench_run.main(["--device", "cuda", "--scale", "tiny", "--quick", "--interleave", "--workload",
                           "simple_mlp,encoder_block_train", "--backends", "eager,ait", "--no-plots",
                           "--out", str(tmp_path)]) == 0
    records = _read(tmp_path / "results.json")["results"]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    for record in records:
        assert record["timing"].startswith("interleaved with"), record
        assert record["peak_mem_mib"] > 0 and record["above_inputs_mib"] >= 0, record
        if record["backend"] == "ait":
            assert record["speedup_vs_eager"] > 0 and record["eager_same_window_ms"] > 0


def test_wrapper_lines_clock_each_statement_of_the_call_and_name_its_kind():
    from benchmarks import wrapper_lines

    source = (
        "def make_call(k):\n"
        "    def call(args):\n"
        "        a, = args\n"
        "        with k():\n"
        "            b = a.view(2, 2)\n"
        "            buf0 = empty_strided_cuda((4,), (1,), torch.float32)\n"
        "        del a\n"
        "        return b\n"
        "    return call\n"
        "def helper():\n"
        "    return 1\n")
    rewritten = wrapper_lines.instrument(source)
    assert rewritten is not None and wrapper_lines.instrument("def helper():\n    return 1\n") is None
    # a tick after each statement (inside the with block too) and one before the return
    assert [int(line) for line in re.findall(r"_ait_line_clock\.tick\((\d+)\)", rewritten)] == [3, 5, 6, 4, 7, 8]
    kinds = {text: wrapper_lines.line_kind(text) for text in (
        "try:", "triton_poi_fused_0.run(buf0, 12, stream=stream0)", "mm = _aten_mm_default(a, b)",
        "extern_kernels.mm(reinterpret_tensor(buf0, (1,), (1,), 0), b, out=buf1)", "x = _alloc((4,), (1,), torch.float32)",
        "buf0 = empty_strided_cuda((1,), (1,), torch.float32)", "del a, b", "v = x.view(1, 2)", "stream0 = get_raw_stream(0)")}
    assert list(kinds.values()) == ["launch", "launch", "extern mm_default", "extern mm", "allocation", "allocation",
                                    "free", "view", "other"]


def test_wrapper_lines_record_a_compiled_functions_wrapper(tmp_path):
    from benchmarks import wrapper_lines

    with wrapper_lines.record() as modules:
        fn = torch.compile(lambda t: (t @ t).relu() + 1, backend="ait", options={"cache_dir": str(tmp_path)})
        x = torch.randn(8, 8)
        torch.testing.assert_close(fn(x), (x @ x).relu() + 1)
    wrapper_lines.reset(modules)
    fn(x)
    fn(x)
    text = wrapper_lines.table(modules)
    assert "2 calls" in text and "extern mm_default" in text, text
