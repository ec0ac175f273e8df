"""Micro-benchmarks of the kernel families: pointwise, reduction, GEMM with epilogue.

    pytest benchmarks/micro --benchmark-only        # pytest-benchmark, needs a CUDA device
    python -m benchmarks.micro [--out-dir DIR]      # the same cases timed with CUDA events
"""
