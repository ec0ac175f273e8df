"""Micro-benchmarks of the kernel families (pointwise, reduction, GEMM with epilogue): eager vs
Inductor vs ait (CUDA only). Each case reports under its family's pytest-benchmark group."""

import pytest
import torch

from benchmarks.micro.cases import BACKENDS, CASES, bench

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="micro-benchmarks need a CUDA device")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.family}-{case.name}")
def test_micro(benchmark, case, backend):
    bench(benchmark, case, backend)
