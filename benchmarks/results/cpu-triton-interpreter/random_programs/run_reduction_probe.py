"""Random reductions (op, dims: one, several, negative, all; keepdim; dtype=; odd and transposed
shapes; NaN/inf injected) followed by a pointwise use: eager against ait, forward and gradient.
Usage, from a folder outside the repository (its kernels/ folder would shadow the Hub's package),
with TRITON_INTERPRET=1: python <this folder>/run_reduction_probe.py START STOP"""
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

OPS = ["sum", "mean", "amax", "amin", "argmax", "argmin", "prod", "var", "std", "logsumexp", "any", "all",
       "norm", "max_dim", "softmax", "log_softmax", "cumsum", "sum_dtype", "mean_dtype", "nansum", "count_nonzero"]


def build(seed: int):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    rank = rng.randint(1, 4)
    shape = [rng.choice([1, 2, 3, 5, 7, 16, 33, 65, 130]) for _ in range(rank)]
    dtype = rng.choice([torch.float32, torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64,
                        torch.bool, torch.uint8])
    if dtype.is_floating_point:
        x = torch.randn(shape, generator=g).to(dtype)
        if rng.random() < 0.15 and x.numel() > 2:
            x.view(-1)[rng.randrange(x.numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
    elif dtype == torch.bool:
        x = torch.rand(shape, generator=g) > 0.7
    else:
        x = torch.randint(0, 6, shape, generator=g).to(dtype)
    if rank >= 2 and rng.random() < 0.3:
        x = x.transpose(0, -1).contiguous().transpose(0, -1)
    op = rng.choice(OPS)
    ndims = rng.randint(1, rank)
    dims = sorted(rng.sample(range(rank), ndims))
    dims = [d - rank if rng.random() < 0.3 else d for d in dims]
    keepdim = rng.random() < 0.5
    one = dims[0]
    target = rng.choice([torch.float32, torch.int64, torch.float64])
    correction = rng.choice([0, 1, 2])
    pre = rng.choice(["none", "mul", "abs", "exp"])

    def fn(t):
        if t.is_floating_point():
            t = {"none": t, "mul": t * 1.5, "abs": t.abs(), "exp": (t * 0.1).exp()}[pre]
        r = {
            "sum": lambda: t.sum(dims, keepdim), "mean": lambda: t.mean(dims, keepdim),
            "amax": lambda: t.amax(dims, keepdim), "amin": lambda: t.amin(dims, keepdim),
            "argmax": lambda: t.argmax(one, keepdim), "argmin": lambda: t.argmin(one, keepdim),
            "prod": lambda: t.prod(one, keepdim),
            "var": lambda: t.var(dims, correction=correction, keepdim=keepdim),
            "std": lambda: t.std(dims, correction=correction, keepdim=keepdim),
            "logsumexp": lambda: t.logsumexp(dims, keepdim), "any": lambda: t.any(one, keepdim),
            "all": lambda: t.all(one, keepdim), "norm": lambda: torch.linalg.vector_norm(t, 2, dims, keepdim),
            "max_dim": lambda: t.max(one, keepdim)[0], "softmax": lambda: t.softmax(one),
            "log_softmax": lambda: t.log_softmax(one), "cumsum": lambda: t.cumsum(one),
            "sum_dtype": lambda: t.sum(dims, keepdim, dtype=target),
            "mean_dtype": lambda: t.mean(dims, keepdim, dtype=target),
            "nansum": lambda: t.nansum(dims, keepdim), "count_nonzero": lambda: torch.count_nonzero(t, dims),
        }[op]()
        if r.is_floating_point():
            return r * 2 + 1
        return r

    return fn, x, op, dims, keepdim


def run_seed(seed: int) -> str | None:
    fn, x, op, dims, keepdim = build(seed)
    train = x.is_floating_point() and x.dtype != torch.float64
    try:
        xe = x.clone().requires_grad_(train and op not in ("argmax", "argmin", "any", "all", "count_nonzero"))
        expected = fn(xe)
    except (RuntimeError, TypeError):
        return None
    xc = x.clone().requires_grad_(xe.requires_grad)
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="ait", dynamic=seed % 4 == 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        actual = compiled(xc)
        grads = None
        if expected.requires_grad:
            cot = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed)).to(expected.dtype)
            ge, = torch.autograd.grad(expected, xe, cot)
            gc, = torch.autograd.grad(actual, xc, cot)
            grads = (gc, ge)
    ait = [str(w.message)[:250] for w in caught if "ait" in str(w.message).lower()]
    if ait:
        return f"{op} {x.dtype}{tuple(x.shape)} dims={dims}: warning {ait[0]}"
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return f"{op}: {actual.dtype}{tuple(actual.shape)} vs {expected.dtype}{tuple(expected.shape)}"
    pairs = [("out", actual, expected)] + ([("grad", *grads)] if grads else [])
    for what, a, e in pairs:
        if e.is_floating_point():
            tol = {torch.float32: 2e-4, torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 6e-2}[e.dtype]
            scale = e.detach().abs().nan_to_num(0, 0, 0).amax().item() if e.numel() else 0.0
            ok = torch.isclose(a.detach().double(), e.detach().double(), rtol=tol, atol=tol * max(1.0, scale) * 0.1, equal_nan=True)
            if not bool(ok.all()):
                bad = ~ok
                return (f"{op} {x.dtype}{tuple(x.shape)} dims={dims} keepdim={keepdim}: {what} {int(bad.sum())} differ, "
                        f"{a.detach()[bad][:3].tolist()} vs {e.detach()[bad][:3].tolist()}")
        elif not torch.equal(a, e):
            return f"{op} {x.dtype}{tuple(x.shape)} dims={dims}: {what} differs {a[a != e][:3].tolist()} vs {e[a != e][:3].tolist()}"
    return None


def main() -> None:
    probe_loop.run(run_seed)


if __name__ == "__main__":
    main()
