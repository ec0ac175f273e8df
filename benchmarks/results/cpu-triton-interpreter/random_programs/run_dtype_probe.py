"""Random pointwise and reduction programs over mixed dtypes (float32/16, bfloat16, int32/64, uint8,
bool; 0-d tensors, Python scalars), eager against ait, integer and bool results exactly. Usage,
from outside the repository (its kernels/ folder shadows the Hub's package), with
TRITON_INTERPRET=1: python <this folder>/run_dtype_probe.py START STOP"""
from __future__ import annotations

import os
import random
import sys
import warnings

import torch
import torch._dynamo

import ait_dynamo  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import probe_loop  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool]
SHAPES = [(4, 5), (1, 5), (4, 1), (5,), ()]


def make_input(rng: random.Random, g: torch.Generator):
    dtype = rng.choice(DTYPES)
    shape = rng.choice(SHAPES)
    if dtype.is_floating_point:
        x = (torch.randn(shape, generator=g) * 3).to(dtype)
    elif dtype == torch.bool:
        x = torch.rand(shape, generator=g) > 0.5
    elif dtype == torch.uint8:
        x = torch.randint(0, 255, shape, generator=g, dtype=torch.uint8)
    else:
        x = torch.randint(-20, 20, shape, generator=g, dtype=dtype)
    if rng.random() < 0.2 and x.dim() == 2 and x.shape[0] > 1 and x.shape[1] > 1:
        x = x.t().contiguous().t()
    return x


def step(rng: random.Random, a: torch.Tensor, b: torch.Tensor) -> tuple[str, tuple]:
    kind = rng.choice(["add", "mul", "sub", "div", "floordiv", "rem", "cmp", "where", "cast", "scalar_add",
                       "scalar_mul", "abs", "neg", "max", "min", "bitand", "clamp", "sum", "amax", "pow2",
                       "logical", "sign", "trunc_div", "mean"])
    return kind, (rng.choice(DTYPES), rng.randint(-3, 3), rng.choice([2.5, -1.5, 3, 0.5]), rng.choice([0, -1]))


def apply(kind: str, params, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor | None:
    dtype, small, scalar, dim = params
    floaty = a.is_floating_point() or b.is_floating_point()
    if kind == "add":
        return a + b if not (a.dtype == torch.bool and b.dtype == torch.bool) else a | b
    if kind == "mul":
        return a * b
    if kind == "sub":
        if a.dtype == torch.bool or b.dtype == torch.bool:
            return None
        return a - b
    if kind == "div":
        return a / (b.abs() + 1) if b.dtype != torch.bool else a / (b.int() + 1)
    if kind == "floordiv":
        if b.dtype == torch.bool or a.dtype == torch.bool:
            return None
        return torch.floor_divide(a, b.abs() + 1)
    if kind == "trunc_div":
        if b.dtype == torch.bool or a.dtype == torch.bool:
            return None
        return torch.div(a, b.abs() + 1, rounding_mode="trunc")
    if kind == "rem":
        if b.dtype == torch.bool or a.dtype == torch.bool:
            return None
        return torch.remainder(a, b.abs() + 1)
    if kind == "cmp":
        return (a < b) if a.dtype != torch.bool and b.dtype != torch.bool else a == b
    if kind == "where":
        return torch.where(c.bool() if c.dtype != torch.bool else c, a, b)
    if kind == "cast":
        if a.is_floating_point() and not dtype.is_floating_point and dtype != torch.bool:
            return a.clamp(-100, 100).to(dtype) if dtype != torch.uint8 else a.abs().clamp(0, 200).to(dtype)
        return a.to(dtype)
    if kind == "scalar_add":
        if a.dtype == torch.bool:
            return None
        return a + small if small != 0 else a + scalar
    if kind == "scalar_mul":
        return a * scalar if a.dtype != torch.bool else a * small
    if kind == "abs":
        return a.abs() if a.dtype != torch.bool else None
    if kind == "neg":
        return -a if a.dtype != torch.bool else None
    if kind == "max":
        return torch.maximum(a, b)
    if kind == "min":
        return torch.minimum(a, b)
    if kind == "bitand":
        if a.is_floating_point() or b.is_floating_point():
            return None
        return a & b
    if kind == "clamp":
        if a.dtype == torch.bool:
            return None
        return a.clamp(min=small) if small < 0 else a.clamp(max=small + 1)
    if kind == "sum":
        return a.sum(dim) if a.dim() > 0 else a.sum()
    if kind == "mean":
        if not a.is_floating_point():
            return None
        return a.mean(dim) if a.dim() > 0 else a
    if kind == "amax":
        if a.dim() == 0 or a.dtype == torch.bool:
            return None
        return a.amax(dim)
    if kind == "pow2":
        if a.dtype == torch.bool:
            return None
        return a * a
    if kind == "logical":
        return torch.logical_and(a, b) if small > 0 else torch.logical_not(a)
    if kind == "sign":
        return a.sign() if a.dtype != torch.bool else None
    return None


def build(seed: int):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    inputs = [make_input(rng, g) for _ in range(rng.randint(2, 4))]
    steps = []
    pool = [x.clone() for x in inputs]
    for _ in range(rng.randint(3, 9)):
        kind, params = step(rng, None, None)
        ia, ib, ic = (rng.randrange(len(pool)) for _ in range(3))
        try:
            value = apply(kind, params, pool[ia], pool[ib], pool[ic])
        except RuntimeError:
            value = None
        if value is not None:
            steps.append((kind, params, ia, ib, ic))
            pool.append(value)

    def fn(*xs):
        pool = list(xs)
        for kind, params, ia, ib, ic in steps:
            pool.append(apply(kind, params, pool[ia], pool[ib], pool[ic]))
        return tuple(pool[len(xs):][-3:])

    return fn, inputs


def compare(actual, expected) -> str | None:
    if len(actual) != len(expected):
        return f"{len(actual)} outputs vs {len(expected)}"
    for i, (x, y) in enumerate(zip(actual, expected)):
        if x.dtype != y.dtype or x.shape != y.shape:
            return f"output {i}: {x.dtype}{tuple(x.shape)} vs eager {y.dtype}{tuple(y.shape)}"
        if y.is_floating_point():
            tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[y.dtype]
            close = torch.isclose(x.float(), y.float(), rtol=tol, atol=tol, equal_nan=True)
            if not bool(close.all()):
                return f"output {i} ({y.dtype}): {int((~close).sum())} differ, e.g. {x[~close][:3].tolist()} vs {y[~close][:3].tolist()}"
        elif not torch.equal(x, y):
            return f"output {i} ({y.dtype}): {int((x != y).sum())} differ, e.g. {x[x != y][:3].tolist()} vs {y[x != y][:3].tolist()}"
    return None


def run_seed(seed: int) -> str | None:
    fn, inputs = build(seed)
    try:
        expected = fn(*[x.clone() for x in inputs])
    except Exception:  # noqa: BLE001
        return None
    if not expected:
        return None
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="ait", dynamic=seed % 4 == 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actual = compiled(*[x.clone() for x in inputs])
    ait = [str(w.message)[:300] for w in caught if "ait" in str(w.message).lower()]
    if ait:
        return "warning " + ait[0]
    return compare(actual, expected)


def main() -> None:
    probe_loop.run(run_seed)


if __name__ == "__main__":
    main()
