"""Micro-benchmarks of the kernel families: pointwise, reduction, GEMM with epilogue.

    python -m benchmarks micro [--out DIR]           # through the harness, timed with CUDA events
    pytest benchmarks/micro --benchmark-only         # pytest-benchmark, needs a CUDA device
"""
