"""Why tests/test_gemm_template_gpu.py failed on the H200 at 2968b3f (issue 14): is the template
wrong, or do its results differ from eager's only by the rounding of the intermediates it reads?

For each dtype: Linear(515 -> 257) + GELU on x[1000, 515] (the "ragged" test), forward and
backward, with gemm_backends ("triton",) and ("aten",) side by side: per output, the elements
outside the test's bound, the RMSE against float64 (dynamo's accuracy rule compares these) and
eager's. Then each template GEMM alone on the same operands as cuBLAS (no intermediates of its
own): max |template - cuBLAS| in units of the output's rounding step. Last, the measured choice
(autotune) with ait_dynamo's log at INFO, to show why no decision was stored.

    python3 benchmarks/results/nvidia-h200/gemm_template/diagnose.py
"""

from __future__ import annotations

import logging
import sys
import tempfile

import torch

sys.path.insert(0, "tests")
from utils import TOLERANCES, _backward, _grads, _to_fp64  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU: a smoke run under TRITON_INTERPRET=1

TRITON, ATEN = {"gemm_backends": ("triton",)}, {"gemm_backends": ("aten",)}


def judge(actual: torch.Tensor, eager: torch.Tensor, ref: torch.Tensor) -> str:
    rtol, atol = TOLERANCES[eager.dtype]
    a, e, r = actual.double(), eager.double(), ref.double()
    bad = ((a - r).abs() > atol + rtol * r.abs() + 2 * (e - r).abs()).sum().item()
    rmse = lambda x: ((x - r) ** 2).mean().sqrt().item()  # noqa: E731
    return f"bad {bad:6d}/{e.numel()}  rmse {rmse(a):.3e} (eager {rmse(e):.3e})  max|ait-eager| {(a - e).abs().max().item():.3e}"


def linear_gelu(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(515, 257), torch.nn.GELU()).to(DEVICE, dtype)
    x = torch.randn(1000, 515, device=DEVICE, dtype=dtype, requires_grad=True)
    reference = _to_fp64(model)
    x64 = x.detach().double().requires_grad_()
    out64 = reference(x64)
    _backward(out64, 0)
    grads64 = _grads(reference, (x64,))
    eager_x = x.detach().clone().requires_grad_()
    eager_out = model(eager_x)
    _backward(eager_out, 0)
    eager_grads = _grads(model, (eager_x,))
    for name, options in (("triton", TRITON), ("aten", ATEN)):
        import copy
        torch._dynamo.reset()
        clone = copy.deepcopy(model)
        for p in clone.parameters():
            p.grad = None
        cx = x.detach().clone().requires_grad_()
        out = torch.compile(clone, backend="ait", options=options)(cx)
        _backward(out, 0)
        print(f"{dtype} {name:6s} output  {judge(out, eager_out, out64)}")
        for i, (g, e, r) in enumerate(zip(_grads(clone, (cx,)), eager_grads, grads64)):
            print(f"{dtype} {name:6s} grad[{i}] {judge(g, e, r)}")


def bmm_sigmoid(dtype: torch.dtype) -> None:
    """test_bmm_with_epilogue: sigmoid(bmm(a, b)) * 3, forward and backward, both backends."""
    torch.manual_seed(0)
    a = torch.randn(3, 100, 70, device=DEVICE, dtype=dtype)
    b = torch.randn(3, 70, 90, device=DEVICE, dtype=dtype)
    fn = lambda a, b: torch.bmm(a, b).sigmoid() * 3.0  # noqa: E731

    def run(f, *xs):
        leaves = [x.detach().clone().requires_grad_() for x in xs]
        out = f(*leaves)
        _backward(out, 0)
        return out, [x.grad for x in leaves]

    ref_out, ref_grads = run(fn, a.double(), b.double())
    eager_out, eager_grads = run(fn, a, b)
    for name, options in (("triton", TRITON), ("aten", ATEN)):
        torch._dynamo.reset()
        out, grads = run(torch.compile(fn, backend="ait", options=options), a, b)
        print(f"{dtype} bmm {name:6s} output  {judge(out, eager_out, ref_out)}")
        for i, (g, e, r) in enumerate(zip(grads, eager_grads, ref_grads)):
            print(f"{dtype} bmm {name:6s} grad[{i}] {judge(g, e, r)}")


def gemm_alone(dtype: torch.dtype) -> None:
    """The backward's weight GEMM (t(dY) @ X, K = 1000) and input GEMM on cuBLAS's own operands."""
    torch.manual_seed(1)
    dy = torch.randn(1000, 257, device=DEVICE, dtype=dtype)
    x = torch.randn(1000, 515, device=DEVICE, dtype=dtype)
    w = torch.randn(257, 515, device=DEVICE, dtype=dtype)
    cases = {"t(dY) @ X": (lambda a, b: a.t() @ b, dy, x), "dY @ W": (lambda a, b: a @ b, dy, w),
             "bmm": (lambda a, b: torch.bmm(a, b), torch.randn(3, 100, 90, device=DEVICE, dtype=dtype),
                     torch.randn(3, 90, 70, device=DEVICE, dtype=dtype)),
             # the backward of test_bmm_with_epilogue: grad_a = g @ b^T, grad_b = a^T @ g
             "bmm @b^T": (lambda a, b: torch.bmm(a, b.transpose(1, 2)), torch.randn(3, 100, 90, device=DEVICE, dtype=dtype),
                          torch.randn(3, 70, 90, device=DEVICE, dtype=dtype)),
             "bmm a^T@": (lambda a, b: torch.bmm(a.transpose(1, 2), b), torch.randn(3, 100, 70, device=DEVICE, dtype=dtype),
                          torch.randn(3, 100, 90, device=DEVICE, dtype=dtype)),
             "bmm+sigm": (lambda a, b: torch.bmm(a, b).sigmoid() * 3.0, torch.randn(3, 100, 70, device=DEVICE, dtype=dtype),
                          torch.randn(3, 70, 90, device=DEVICE, dtype=dtype))}
    for label, (fn, a, b) in cases.items():
        torch._dynamo.reset()
        got = torch.compile(fn, backend="ait", options=TRITON)(a, b)
        want = fn(a, b)
        exact = fn(a.double(), b.double())
        step = torch.finfo(dtype).eps * exact.abs().clamp_min(1e-3)
        print(f"{dtype} alone {label:10s} max|template-cuBLAS|/eps·|x| {((got.double() - want.double()).abs() / step).max().item():.2f}"
              f"  template err/eps {((got.double() - exact).abs() / step).max().item():.2f}"
              f"  cuBLAS err/eps {((want.double() - exact).abs() / step).max().item():.2f}")


def measured_choice() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("ait_dynamo").setLevel(logging.INFO)
    from ait_dynamo.kernels import gemm_tuning

    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512))
    model = model.to(DEVICE, torch.float16)
    x = torch.randn(1024, 512, device=DEVICE, dtype=torch.float16)
    gemm_tuning._decisions.clear()
    torch._dynamo.reset()
    with tempfile.TemporaryDirectory() as cache, torch.no_grad():
        torch.compile(model, backend="ait", options={"autotune": True, "cache_dir": cache})(x)
        import pathlib
        print("decision files:", [str(p) for p in pathlib.Path(cache).rglob("*.json")])


if __name__ == "__main__":
    print(torch.__version__, torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu")
    for dtype in [getattr(torch, d) for d in (sys.argv[1:] or ["float16", "bfloat16", "float32"])]:
        linear_gelu(dtype)
        bmm_sigmoid(dtype)
        gemm_alone(dtype)
    if DEVICE == "cuda":
        measured_choice()
