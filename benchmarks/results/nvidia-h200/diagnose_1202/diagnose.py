"""Three questions the GPU answered badly on 2026-12-02 (6856e13), asked one at a time.

host   GPT-2 (and BERT for contrast): ait's enqueue time per step is 7.5 ms against Inductor's 3.9,
       yet under cProfile the two are equal (6.2 / 6.7 ms). Per backend: the host time of one step
       (synchronised before) with the garbage collector on and off; the CPU-side profile of one step
       (the CUDA runtime calls and ATen ops by self time); synchronising calls caught by
       torch.cuda.set_sync_debug_mode.
layout tests/test_layout_gpu.py's float32-without-TF32 blocks under channels_last="on": is the
       extra error ait's, or cuDNN's NHWC kernels'? eager NCHW, eager NHWC and ait per gradient.
gemm   tests/test_gemm_template_gpu.py's ragged Linear+GELU in float32: which gradient, template
       against cuBLAS.

    python3 benchmarks/results/nvidia-h200/diagnose_1202/diagnose.py host layout gemm
"""
from __future__ import annotations

import copy
import gc
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DEVICE = torch.device("cuda")


def host_us(fn, args, iters=30):
    samples = []
    for _ in range(iters):
        torch.cuda.synchronize()
        begin = time.perf_counter()
        out = fn(*args)
        samples.append((time.perf_counter() - begin) * 1e6)
        del out
    return statistics.median(samples), min(samples)


def host(workloads=("hf_gpt2", "hf_bert_base")) -> None:
    from benchmarks.workloads import WORKLOADS
    for name in workloads:
        built = WORKLOADS[name].build("seed", 8, DEVICE)
        model, args = built.module, built.inputs
        for backend in ("eager", "inductor", "ait"):
            torch._dynamo.reset()
            fn = model if backend == "eager" else torch.compile(model, backend=backend)
            with torch.no_grad():
                for _ in range(5):
                    fn(*args)
                torch.cuda.synchronize()
                med, low = host_us(fn, args)
                gc.disable()
                med_nogc, low_nogc = host_us(fn, args)
                gc.enable()
                caught = []
                with warnings.catch_warnings(record=True) as records:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    fn(*args)
                    torch.cuda.set_sync_debug_mode(0)
                    caught = [str(r.message)[:160] for r in records]
                torch.cuda.synchronize()
                from torch.profiler import ProfilerActivity, profile
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        fn(*args)
                    torch.cuda.synchronize()
            print(f"== host {name} {backend}: median {med:.0f} us (min {low:.0f}), gc off {med_nogc:.0f} us "
                  f"(min {low_nogc:.0f}); synchronising calls: {len(caught)} {sorted(set(caught))[:5]}", flush=True)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22, max_name_column_width=70)
            print(table, flush=True)


LAYOUT_RUNS = ("eager_nchw", "eager_nhwc", "aot_nchw", "aot_nhwc", "inductor_nchw", "ait_off", "ait_on")


def layout() -> None:
    from test_layout import BLOCKS, _channels
    for name in ("resnet", "inverted_residual"):
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            torch.manual_seed(0)
            model = BLOCKS[name]().cuda().train()
            x = torch.randn(8, _channels(model), 20, 20, device="cuda")
            runs = {}
            ref = copy.deepcopy(model).double()
            xr = x.double().requires_grad_()
            ref(xr).sum().backward()
            runs["fp64"] = [xr.grad] + [p.grad for p in ref.parameters()]
            for label in LAYOUT_RUNS:
                torch._dynamo.reset()
                m = copy.deepcopy(model)
                xi = x.clone()
                if label.endswith("nhwc"):
                    m = m.to(memory_format=torch.channels_last)
                    xi = xi.to(memory_format=torch.channels_last)
                xi.requires_grad_()
                if label.startswith("eager"):
                    f = m
                elif label.startswith("ait"):
                    f = torch.compile(m, backend="ait", options={"channels_last": label.split("_")[1]})
                else:
                    f = torch.compile(m, backend=label.split("_")[0].replace("aot", "aot_eager"))
                f(xi).sum().backward()
                runs[label] = [xi.grad] + [p.grad for p in m.parameters()]
            names = ["x"] + [n for n, _ in model.named_parameters()]
            for i, pname in enumerate(names):
                r = runs["fp64"][i]
                cells = []
                for label in LAYOUT_RUNS:
                    e = runs[label][i].double() - r
                    cells.append(f"{label} rmse {e.pow(2).mean().sqrt().item():.2e} max {e.abs().max().item():.2e}")
                print(f"== layout {name} grad[{i}] {pname} {tuple(r.shape)}: " + " | ".join(cells), flush=True)


def gemm() -> None:
    for options in ({"gemm_backends": ("triton",)}, {"gemm_backends": ("aten",)}):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(515, 257), torch.nn.GELU()).cuda()
        x = torch.randn(1000, 515, device="cuda", requires_grad=True)
        ref = copy.deepcopy(model).double()
        xr = x.detach().double().requires_grad_()
        g = torch.randn(1000, 257, device="cuda")
        ref(xr).backward(g.double())
        eager = copy.deepcopy(model)
        xe = x.detach().clone().requires_grad_()
        eager(xe).backward(g)
        torch._dynamo.reset()
        comp = copy.deepcopy(model)
        xc = x.detach().clone().requires_grad_()
        out = torch.compile(comp, backend="ait", options=options)(xc)
        out.backward(g)
        for label, r, e, a in (("out", ref(xr), eager(xe), out),
                               ("x", xr.grad, xe.grad, xc.grad),
                               ("weight", ref[0].weight.grad, eager[0].weight.grad, comp[0].weight.grad),
                               ("bias", ref[0].bias.grad, eager[0].bias.grad, comp[0].bias.grad)):
            ea, ee = a.double() - r.double(), e.double() - r.double()
            print(f"== gemm {options['gemm_backends'][0]} {label}: ait rmse {ea.pow(2).mean().sqrt().item():.2e} "
                  f"max {ea.abs().max().item():.2e} | eager rmse {ee.pow(2).mean().sqrt().item():.2e} "
                  f"max {ee.abs().max().item():.2e} | max|ref| {r.abs().max().item():.1f}", flush=True)


def sdpa() -> None:
    """Host and GPU time of one attention call per SDPA kernel, GPT-2's shape with its float mask."""
    q, k, v = (torch.randn(8, 12, 128, 64, device="cuda", dtype=torch.half) for _ in range(3))
    mask = torch.zeros(8, 1, 128, 128, device="cuda", dtype=torch.half)
    aten = torch.ops.aten
    calls = {
        "cudnn+mask": lambda: aten._scaled_dot_product_cudnn_attention(q, k, v, mask, False, 0.0, False, False, scale=0.125),
        "efficient+mask": lambda: aten._scaled_dot_product_efficient_attention(q, k, v, mask, False, 0.0, False, scale=0.125),
        "flash causal": lambda: aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=0.125),
        "cudnn causal": lambda: aten._scaled_dot_product_cudnn_attention(q, k, v, None, False, 0.0, True, False, scale=0.125),
        "efficient causal": lambda: aten._scaled_dot_product_efficient_attention(q, k, v, None, False, 0.0, True, scale=0.125),
    }
    import triton.testing
    for name, call in calls.items():
        for _ in range(20):
            call()
        torch.cuda.synchronize()
        samples = []
        for _ in range(200):
            begin = time.perf_counter()
            call()
            samples.append((time.perf_counter() - begin) * 1e6)
        torch.cuda.synchronize()
        gpu = triton.testing.do_bench(call, warmup=50, rep=200)
        print(f"== sdpa {name}: host {statistics.median(samples):.1f} us/call, GPU {gpu * 1e3:.1f} us", flush=True)


def _host_per_call(call, iters=300) -> float:
    for _ in range(30):
        call()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        begin = time.perf_counter()
        call()
        samples.append((time.perf_counter() - begin) * 1e6)
        if len(samples) % 50 == 0:
            torch.cuda.synchronize()  # the queue never fills
    torch.cuda.synchronize()
    return statistics.median(samples)


def externs() -> None:
    """BERT's linear (8 x 128 tokens, 768 -> 768, fp16): host us per addmm call, by entry point
    and by where its operands and output live (ait's addmm measured 36 us a call in the profile
    against Inductor's 22)."""
    x = torch.randn(1024, 768, device="cuda", dtype=torch.half)
    w = torch.randn(768, 768, device="cuda", dtype=torch.half)
    b = torch.randn(768, device="cuda", dtype=torch.half)
    arena = torch.empty(64 * 2**20, device="cuda", dtype=torch.half)
    x_view = arena[4096:4096 + x.numel()].view(1024, 768).copy_(x)
    out = torch.empty(1024, 768, device="cuda", dtype=torch.half)
    out_view = arena[2**20:2**20 + out.numel()].view(1024, 768)
    wt = w.t()
    aten = torch.ops.aten
    calls = {
        "torch.addmm(b, x, w.t())": lambda: torch.addmm(b, x, wt),
        "torch.addmm(b, x, w.t()) fresh t": lambda: torch.addmm(b, x, w.t()),
        "aten.addmm.default._op": lambda: aten.addmm.default._op(b, x, wt),
        "torch.addmm out=": lambda: torch.addmm(b, x, wt, out=out),
        "torch.addmm x in arena": lambda: torch.addmm(b, x_view, wt),
        "torch.addmm out= arena": lambda: torch.addmm(b, x_view, wt, out=out_view),
        "torch.mm": lambda: torch.mm(x, wt),
        "torch.mm out=": lambda: torch.mm(x, wt, out=out),
        "F.linear": lambda: torch.nn.functional.linear(x, w, b),
        "empty_strided": lambda: torch.empty_strided((1024, 768), (768, 1), dtype=torch.half, device="cuda"),
        "cat(empty, t)": lambda: torch.cat([torch.tensor([], dtype=torch.half, device="cuda"), x.view(8, 128, 12, 64).transpose(1, 2)], -2),
    }
    for name, call in calls.items():
        print(f"== externs {name}: host {_host_per_call(call):.1f} us/call", flush=True)
    with torch.no_grad():
        print(f"== externs (no_grad) torch.addmm: host {_host_per_call(calls['torch.addmm(b, x, w.t())']):.1f} us/call")


def convolutions() -> None:
    """EfficientNet-B0's convolutions (fp16, channels-last, batch 32): host us per call by entry
    point, and with parameters that require grad under no_grad (ait's wrapper spent 66 us a call
    under cProfile against Inductor's 44, 9afe921)."""
    import triton.testing

    aten = torch.ops.aten
    x = torch.randn(32, 96, 56, 56, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    depthwise = torch.randn(96, 1, 3, 3, device="cuda", dtype=torch.half)
    pointwise = torch.randn(24, 96, 1, 1, device="cuda", dtype=torch.half)
    param = torch.nn.Parameter(depthwise.clone())
    dw_args = ([1, 1], [1, 1], [1, 1], False, [0, 0], 96)
    pw_args = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    calls = {
        "depthwise torch.convolution": lambda: torch.convolution(x, depthwise, None, *dw_args),
        "depthwise aten.convolution.default._op": lambda: aten.convolution.default._op(x, depthwise, None, *dw_args),
        "depthwise aten.convolution.default": lambda: aten.convolution.default(x, depthwise, None, *dw_args),
        "depthwise tuples torch.convolution": lambda: torch.convolution(x, depthwise, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 96),
        "depthwise Parameter torch.convolution": lambda: torch.convolution(x, param, None, *dw_args),
        "1x1 torch.convolution": lambda: torch.convolution(x, pointwise, None, *pw_args),
        "1x1 aten.convolution.default._op": lambda: aten.convolution.default._op(x, pointwise, None, *pw_args),
    }
    with torch.no_grad():
        for name, call in calls.items():
            print(f"== convolutions {name}: host {_host_per_call(call):.1f} us/call", flush=True)
        for name in ("depthwise torch.convolution", "1x1 torch.convolution"):
            gpu = triton.testing.do_bench(calls[name], warmup=25, rep=100)
            print(f"== convolutions {name}: GPU {gpu * 1e3:.1f} us", flush=True)


if __name__ == "__main__":
    for step in sys.argv[1:] or ["host", "layout", "gemm"]:
        try:
            globals()[step]()
        except Exception as error:  # noqa: BLE001 - keep the other questions
            import traceback
            traceback.print_exc()
            print(f"== {step} failed: {error!r}", flush=True)
