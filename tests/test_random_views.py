"""Seeded random chains of views and shifts (slices with steps, transposes, expands, ``as_strided``
at an offset, ``select``, ``narrow``, ``diagonal``, ``unfold``, ``flip``, reshapes, pads and crops)
between a pointwise op and a sum, forward and backward, against eager and float64; every third
seed with ``dynamic=True``. The passes that drop no-ops judge views by their layout: a probe of
this kind (600 chains) ran after ``as_strided`` at another storage offset and a same-shape pad
(a shift) were found dropped as no-ops (``passes/remove_noops.py``)."""

from __future__ import annotations

import os
import random
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from ait_dynamo.kernels.runtime import triton_runs_on
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.skipif(not triton_runs_on(DEVICE), reason="Triton cannot run here (set TRITON_INTERPRET=1)"),
              pytest.mark.usefixtures("generated_kernels_must_not_fail")]

Step = Callable[[torch.Tensor], torch.Tensor]


def _step(rng: random.Random, shape: tuple[int, ...]) -> Step | None:
    """One view or shift valid for ``shape``, its arguments fixed now (plain ints in the program)."""
    rank = len(shape)
    dim = rng.randrange(rank)
    size = shape[dim]
    kind = rng.choice(["slice", "transpose", "unsqueeze", "expand", "as_strided", "select", "narrow",
                       "diagonal", "unfold", "flip", "reshape", "pad"])
    if kind == "slice":
        start, step = rng.randrange(size + 1), rng.randint(1, 3)
        return lambda x: x[(slice(None),) * dim + (slice(start, None, step),)]
    if kind == "transpose":
        other = rng.randrange(rank)
        return lambda x: x.transpose(dim, other)
    if kind == "unsqueeze":
        where = rng.randrange(rank + 1)
        return lambda x: x.unsqueeze(where)
    if kind == "expand" and 1 in shape:
        sizes = list(shape)
        sizes[shape.index(1)] = rng.randint(1, 4)
        return lambda x: x.expand(*sizes)
    if kind == "as_strided":
        numel = 1
        for s in shape:
            numel *= s
        if numel < 2:
            return None
        offset = rng.randrange(numel - 1)
        length = max(1, (numel - offset) // 2)
        return lambda x: torch.as_strided(x.contiguous(), (length,), (1,), x.contiguous().storage_offset() + offset)
    if kind == "select" and rank > 1:
        index = rng.randrange(size) - (size if rng.random() < 0.5 else 0)
        return lambda x: x.select(dim, index)
    if kind == "narrow":
        start = rng.randrange(size)
        length = rng.randint(0, size - start)
        return lambda x: x.narrow(dim, start, length)
    if kind == "diagonal" and rank >= 2:
        return lambda x: x.diagonal(0, dim, (dim + 1) % rank)
    if kind == "unfold" and size >= 2:
        step = rng.randint(1, 2)
        return lambda x: x.unfold(dim, 2, step)
    if kind == "flip":
        return lambda x: x.flip(dim)
    if kind == "reshape":
        return lambda x: x.reshape(-1)
    if kind == "pad":
        last = shape[-1]
        before, after = rng.randint(-2, 2), rng.randint(-2, 2)
        if last + before < 0 or last + after < 0 or last + before + after < 1:
            return None
        return lambda x: F.pad(x, (before, after), value=0.5)
    return None


def _program(seed: int) -> tuple[tuple[int, ...], Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
    rng = random.Random(seed)
    shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 4)))
    steps: list[Step] = []
    current = torch.empty(shape, device="meta")
    for _ in range(rng.randint(1, 5)):
        if current.dim() == 0 or current.numel() == 0:
            break
        step = _step(rng, tuple(current.shape))
        if step is not None:
            steps.append(step)
            current = step(current)

    def program(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x * 1.5
        for step in steps:
            y = step(y)
        return y.sin() * 2, y.sum()

    return shape, program


@pytest.mark.parametrize("seed", range(int(os.environ.get("AIT_RANDOM_VIEWS", "30"))))
def test_random_view_chain(seed):
    shape, program = _program(seed)
    x = torch.randn(*shape, device=DEVICE, requires_grad=True)
    check_compiled(program, x, dynamic=True if seed % 3 == 0 else None)
