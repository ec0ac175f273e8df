"""Run seeds ``start``..``stop`` of a seeded test function outside pytest, one line per failing
seed (the conftest's per-test resets are done here)::

    TRITON_INTERPRET=1 AIT_INTERPRET_MAX_XBLOCK=64 python run_seeds.py test_fusion_random_graphs test_random_program 1500 5000
    TRITON_INTERPRET=1 AIT_INTERPRET_MAX_XBLOCK=64 python run_seeds.py test_random_transformers test_random_transformer 200 1000

Run it from a folder other than the repository root: Hugging Face's ``kernels`` package would
otherwise meet ours on the path.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))

from ait_dynamo import metrics  # noqa: E402
from ait_dynamo.kernels import runtime  # noqa: E402


def main() -> None:
    module, function, start, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    test = getattr(importlib.import_module(module), function)
    failing = 0
    for seed in range(start, stop):
        torch._dynamo.reset()
        metrics.reset()
        runtime.BROKEN.clear()
        try:
            test(seed)
            if runtime.BROKEN:
                raise AssertionError(f"generated kernels failed: {runtime.BROKEN}")
        except Exception as error:  # noqa: BLE001 - every failure is reported, the run goes on
            failing += 1
            print(f"SEED {seed}: {type(error).__name__}: {str(error)[:300]}", flush=True)
        if seed % 100 == 0:
            print(f"at {seed}, {failing} failing", flush=True)
    print("done", start, stop, "failing", failing, flush=True)


if __name__ == "__main__":
    main()
