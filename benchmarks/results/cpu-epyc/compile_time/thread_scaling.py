"""Triton's compile of a suite training step's kernels for sm90 on the CPU, in 1, 2 and 4 threads
(what ``kernels/precompile.py`` does on a GPU host). Step one (under TRITON_INTERPRET=1) compiles
the step with ait and keeps each graph's source and kernels' warm-up arguments; step two (without
the interpreter) loads those modules and warms every distinct kernel up against an sm90 target
through a stand-in driver (Triton compiles for a target without a GPU).
Usage, from the repository root:
  TRITON_INTERPRET=1 python benchmarks/results/cpu-epyc/compile_time/thread_scaling.py capture
  python benchmarks/results/cpu-epyc/compile_time/thread_scaling.py compile 1 2 4"""
from __future__ import annotations

import concurrent.futures
import os
import pickle
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())
CAPTURED = os.path.join(tempfile.gettempdir(), "ait_thread_scaling.pkl")


def capture() -> None:
    import torch

    import ait_dynamo.compile as compile_driver
    from benchmarks.model_suite import _HFTrain, _hf_model

    sources: list[str] = []
    kernels: list[list[tuple]] = []
    real_load = compile_driver.load_module

    def load(source, cache_dir):
        sources.append(source)
        return real_load(source, cache_dir)

    compile_driver.load_module = load
    compile_driver.precompile = lambda module, generated, workers: kernels.append(
        [(k.name, k.warmup, k.kind, k.persistent, k.column) for k in generated]) or 0
    torch.manual_seed(0)
    model = _HFTrain(_hf_model("bert_base", "seed", True))
    compiled = torch.compile(model, backend="ait", options={"cache_dir": tempfile.mkdtemp(), "compile_workers": 1})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        compiled(torch.randint(0, 1000, (1, 16)), torch.randint(0, 1000, (1, 16))).backward()
    with open(CAPTURED, "wb") as file:
        pickle.dump({"sources": sources, "kernels": kernels}, file)
    print("graphs", len(sources), "kernel sites", [len(k) for k in kernels])


def compile_all(workers: int) -> None:
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp()  # nothing cached: every kernel compiles
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    class StandInDriver:
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

    driver.set_active(StandInDriver())
    from ait_dynamo.cache import load_module
    from ait_dynamo.kernels.precompile import _warm

    with open(CAPTURED, "rb") as file:
        data = pickle.load(file)
    jobs = []
    for source, kernels in zip(data["sources"], data["kernels"]):
        module, _ = load_module(source, tempfile.mkdtemp())
        seen = set()
        for name, warmup, kind, persistent, column in kernels:
            if warmup is not None and (name, warmup) not in seen:
                seen.add((name, warmup))
                jobs.append((getattr(module, name), warmup, kind, persistent, column))
    begin = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda job: _warm(*job), jobs))
    print(f"{len(jobs)} kernels compiled for sm90 in {workers} thread(s): {time.perf_counter() - begin:.2f} s")


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture()
    elif sys.argv[1] == "one":
        compile_all(int(sys.argv[2]))
    else:  # "compile": each thread count in a fresh process, Triton's in-memory caches empty
        import subprocess

        for workers in sys.argv[2:]:
            subprocess.run([sys.executable, __file__, "one", workers], check=True)
