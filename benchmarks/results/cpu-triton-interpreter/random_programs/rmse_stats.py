"""ait's RMSE against float64 over eager's, for every output and gradient of the seeds of
``test_random_transformers`` in a range that draw one half-precision dtype (what the
"distribution" rule compares), summarised::

    TRITON_INTERPRET=1 AIT_INTERPRET_MAX_XBLOCK=64 python rmse_stats.py 2000 2200 torch.bfloat16

Run it from a folder other than the repository root (see ``run_seeds.py``).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch._dynamo

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))

import test_random_transformers  # noqa: E402
import utils  # noqa: E402
from ait_dynamo import metrics  # noqa: E402

ratios: list[float] = []


def recording(a64: torch.Tensor, e64: torch.Tensor, r64: torch.Tensor, atol: float) -> None:
    """Stands in for the rule: records the ratio, flags nothing."""
    finite = torch.isfinite(e64) & torch.isfinite(r64)
    error, eager_error = (a64 - r64).abs()[finite], (e64 - r64).abs()[finite]
    eager_rmse = float(eager_error.pow(2).mean().sqrt())
    if eager_rmse > 0:
        ratios.append(float(error.pow(2).mean().sqrt()) / eager_rmse)


def main() -> None:
    start, stop, dtype = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    utils._distribution_problem = recording
    seeds = [seed for seed in range(start, stop) if str(test_random_transformers._case(seed)[1].dtype) == dtype]
    for seed in seeds:
        torch._dynamo.reset()
        metrics.reset()
        test_random_transformers._check(seed, {})
    quartiles = [round(q, 3) for q in statistics.quantiles(ratios, n=4)]
    print(f"{dtype} seeds {len(seeds)} tensors {len(ratios)} RMSE ratio ait/eager: median {statistics.median(ratios):.3f} "
          f"mean {statistics.mean(ratios):.3f}; quartiles {quartiles}; >1.5: {sum(r > 1.5 for r in ratios)}")


if __name__ == "__main__":
    main()
