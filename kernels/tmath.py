"""Math functions the op table's expressions call as ``tmath.<name>``.

On a GPU these are CUDA libdevice functions. Triton's CPU interpreter (``TRITON_INTERPRET=1``)
has no libdevice, so there each function is a small Triton function computed in float64 (numpy
underneath), precise enough to stand in for libdevice when CI tests the generated kernels.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

if not INTERPRETING:
    try:
        # The backend's own functions: the generic `triton.language.extra.libdevice` ones are
        # stubs that Triton swaps only when a kernel names that module itself. Reached through
        # this module they return None (triton 3.6 on the H200: CompilationError "'NoneType'
        # object has no attribute 'type'" in every kernel using tanh, trunc, pow, ...).
        from triton.language.extra.cuda import libdevice
    except ImportError:
        from triton.language.extra import libdevice

    tanh = libdevice.tanh
    tan = libdevice.tan
    log1p = libdevice.log1p
    expm1 = libdevice.expm1
    pow = libdevice.pow  # noqa: A001 - libdevice's name
    trunc = libdevice.trunc

    @triton.jit
    def to_bf16(x):
        return x.to(tl.bfloat16)

else:

    @triton.jit
    def to_bf16(x):
        # round to nearest even on the bits (the interpreter's own conversion truncates)
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        rounded = tl.where(x != x, bits, rounded)
        return (rounded & 0xFFFF0000).to(tl.float32, bitcast=True).to(tl.bfloat16)

    @triton.jit
    def tanh(x):
        y = x.to(tl.float64)
        e = tl.exp(-2.0 * tl.abs(y))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(y < 0, -t, t).to(x.dtype)

    @triton.jit
    def tan(x):
        y = x.to(tl.float64)
        return (tl.sin(y) / tl.cos(y)).to(x.dtype)

    @triton.jit
    def log1p(x):
        # log(u) * x / (u - 1) with u = 1 + x is exact to rounding (Goldberg's trick)
        y = x.to(tl.float64)
        u = 1.0 + y
        r = tl.where(u == 1.0, y, tl.log(u) * y / (u - 1.0))
        return tl.where(u == float("inf"), u, r).to(x.dtype)

    @triton.jit
    def expm1(x):
        y = x.to(tl.float64)
        u = tl.exp(y)
        r = tl.where(u == 1.0, y, tl.where(u - 1.0 == -1.0, -1.0, (u - 1.0) * y / tl.log(u)))
        return tl.where(u == float("inf"), u, r).to(x.dtype)

    @triton.jit
    def pow(x, y):  # noqa: A001 - libdevice's name
        a = x.to(tl.float64)
        b = y.to(tl.float64)
        b_int = tl.floor(b) == b
        half = b * 0.5
        b_odd = tl.where(b_int, tl.floor(half) != half, b != b)
        magnitude = tl.exp(b * tl.log(tl.abs(a)))
        negative = a < 0
        signed = tl.where(negative, tl.where(b_odd, -magnitude, magnitude), magnitude)
        r = tl.where(negative, tl.where(b_int, signed, float("nan")), signed)
        r = tl.where(b == 0, 1.0, r)
        r = tl.where(a == 1, 1.0, r)
        return r.to(x.dtype)

    @triton.jit
    def trunc(x):
        return tl.where(x < 0, tl.ceil(x), tl.floor(x))
