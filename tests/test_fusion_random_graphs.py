"""Seeded random programs (pointwise chains, broadcasts, transposes, reductions, row ops, cats of
slices and shifts by padding) through
the planner and generated kernels, against eager and the fp64 reference, forward and backward."""

from __future__ import annotations

import os
import random

import pytest
import torch

from ait_dynamo import metrics
from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled

pytestmark = pytest.mark.usefixtures("generated_kernels_must_not_fail")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)")

UNARY = [torch.sin, torch.tanh, torch.sigmoid, lambda t: t * 1.5, lambda t: t.abs() + 0.1, torch.neg,
         lambda t: torch.relu(t) - 0.3, lambda t: t.exp() * 0.1]
BINARY = [torch.add, torch.mul, torch.sub, torch.maximum, lambda a, b: a / (b.abs() + 1)]


def _program(seed: int):
    rng = random.Random(seed)
    steps = [(rng.randrange(12), rng.random(), rng.random()) for _ in range(rng.randrange(4, 9))]

    def fn(x, row, col):
        values = [x]
        for kind, p, q in steps:
            a = values[int(p * len(values))]
            if kind < 3:
                out = UNARY[int(q * len(UNARY))](a)
            elif kind < 5:
                other = row if q < 0.5 else col
                out = BINARY[int(p * len(BINARY))](a, other)
            elif kind == 5:
                out = a - a.amax(-1, keepdim=True) if q < 0.5 else a * a.mean(0, keepdim=True)
            elif kind == 6:
                out = torch.softmax(a, -1 if q < 0.5 else 0)
            elif kind == 7:
                out = (a.t() * 2).t() + a
            elif kind == 8:
                out = BINARY[int(q * len(BINARY))](a, values[-1])
            elif kind == 9:
                out = a.sum(-1, keepdim=True) * a if q < 0.5 else a.var(0, keepdim=True) + a
            elif kind == 10:  # rotate_half: a cat of slices, one negated (empty halves where a dim is 1)
                if q < 0.5:
                    half = max(1, a.shape[1] // 2)
                    out = torch.cat([-a[:, half:], a[:, :half]], 1)
                else:
                    half = max(1, a.shape[0] // 2)
                    out = torch.cat([a[half:], a[:half]], 0)
            else:  # a shift: slice and pad back to the shape (slice_backward and a pad's slice in the backward)
                out = torch.nn.functional.pad(a[:, 1:], (0, 1), value=q) if p < 0.5 else torch.nn.functional.pad(a[:-1], (0, 0, 1, 0))
            values.append(out)
        return values[-1], values[len(values) // 2]

    return fn


@pytest.mark.parametrize("seed", range(int(os.environ.get("AIT_RANDOM_PROGRAMS", "40"))))
@needs_triton
def test_random_program(seed):
    _check(seed, None)
    assert metrics.compiled_graphs[0].kernels


@pytest.mark.parametrize("seed", range(int(os.environ.get("AIT_RANDOM_ATEN_PATH", "12"))))
def test_random_program_on_the_aten_path(seed):
    """The CPU without Triton's interpreter: nothing generated, ATen's ops with the passes of
    that path (in-place rewrites, negations cancelled)."""
    metrics.reset()
    _check(seed, {"fusion": False}, device="cpu")
    assert not [g.name for g in metrics.compiled_graphs if g.kernels]


def _check(seed: int, options: dict | None, device: str = DEVICE) -> None:
    shape = [(6, 11), (9, 4), (1, 7), (13, 1), (5, 33)][seed % 5]
    dtype = [torch.float32, torch.float16, torch.bfloat16][seed % 3]
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    row = torch.randn(shape[-1], device=device, dtype=dtype, requires_grad=True)
    col = torch.randn(shape[0], 1, device=device, dtype=dtype, requires_grad=True)
    check_compiled(_program(seed), x, row, col, dynamic=True if seed % 7 == 3 else None, options=options)
    for graph in metrics.compiled_graphs:
        assert graph.fallback_reason is None, graph.fallback_reason
