"""Micro-benchmarks of the gemm epilogue kernel family: eager vs Inductor vs ait (CUDA only)."""

import pytest
import torch

from benchmarks.micro.cases import BACKENDS, bench, cases_of

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="micro-benchmarks need a CUDA device")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", cases_of("gemm_epilogue"), ids=lambda case: case.name)
def test_gemm_epilogue(benchmark, case, backend):
    bench(benchmark, case, backend)
