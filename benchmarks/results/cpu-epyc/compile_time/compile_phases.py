"""ait's own compile stages for a suite training step on the CPU, under Triton's interpreter (no
Triton compile: Dynamo, AOTAutograd, then ait's passes, planner and wrapper). The first step
runs once; each stage's wall time is summed over the forward and backward graphs.
Usage, from the repository root: TRITON_INTERPRET=1 python benchmarks/results/cpu-epyc/compile_time/compile_phases.py [family]"""
from __future__ import annotations

import functools
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.getcwd())
import ait_dynamo.compile as compile_driver  # noqa: E402
from ait_dynamo import metrics  # noqa: E402
from benchmarks.model_suite import _HFTrain, _hf_model  # noqa: E402

spent: dict[str, float] = {}


def timed(name: str) -> None:
    original = getattr(compile_driver, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - begin

    setattr(compile_driver, name, wrapper)


for stage in ("run_passes", "build_plan", "generate_wrapper", "_compile"):
    timed(stage)
family = sys.argv[1] if len(sys.argv) > 1 else "bert_base"
torch.manual_seed(0)
model = _HFTrain(_hf_model(family, "seed", True))
ids, labels = torch.randint(0, 1000, (1, 16)), torch.randint(0, 1000, (1, 16))
compiled = torch.compile(model, backend="ait", options={"cache_dir": tempfile.mkdtemp()})
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = compiled(ids, labels)
loss.backward()
print(f"{family} training step, torch {torch.__version__}: seconds summed over its graphs")
print("  " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in spent.items()) + "  (_compile: all of ait's per graph)")
print("  graphs:", [(g.name, len(g.kernels)) for g in metrics.compiled_graphs])
