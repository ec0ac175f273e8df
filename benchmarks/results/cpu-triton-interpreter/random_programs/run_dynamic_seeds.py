"""Run the program generator's dynamic-shape seeds (``seed % 7 == 3``) in ``start``..``stop``,
one line per failing seed and per seed whose forward got no generated kernel::

    TRITON_INTERPRET=1 AIT_INTERPRET_MAX_XBLOCK=64 python run_dynamic_seeds.py 0 2100

Run it from a folder other than the repository root (see ``run_seeds.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))

import test_fusion_random_graphs as programs  # noqa: E402
from ait_dynamo import metrics  # noqa: E402
from ait_dynamo.kernels import runtime  # noqa: E402


def main() -> None:
    start, stop = int(sys.argv[1]), int(sys.argv[2])
    seeds = [seed for seed in range(start, stop) if seed % 7 == 3]
    failing = 0
    for seed in seeds:
        torch._dynamo.reset()
        metrics.reset()
        runtime.BROKEN.clear()
        try:
            programs._check(seed, None)
            if runtime.BROKEN:
                raise AssertionError(f"generated kernels failed: {runtime.BROKEN}")
        except Exception as error:  # noqa: BLE001 - every failure is reported, the run goes on
            failing += 1
            print(f"SEED {seed}: {type(error).__name__}: {str(error)[:300]}", flush=True)
            continue
        if not metrics.compiled_graphs[0].kernels:
            print(f"SEED {seed}: no forward kernel", flush=True)
    print(f"done {start} {stop}: {len(seeds)} seeds, failing {failing}")


if __name__ == "__main__":
    main()
