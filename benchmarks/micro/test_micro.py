"""Micro-benchmarks of the kernel families (pointwise, reduction, GEMM with epilogue): eager vs
Inductor vs ait (CUDA only). Each case reports under its own pytest-benchmark group."""

import pytest
import torch

from benchmarks.micro.cases import BACKENDS, CASES
from benchmarks.micro.runner import bench

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="micro-benchmarks need a CUDA device")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name.replace("/", "-"))
def test_micro(benchmark, case, backend):
    bench(benchmark, case, backend)
