"""Workloads from the seed documents and the benchmark CLI (``python -m benchmarks``, see ``cli.py``)."""
