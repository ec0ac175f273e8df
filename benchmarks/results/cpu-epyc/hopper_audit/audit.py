"""Every generated pointwise, reduction and depthwise kernel of a torchvision model's inference
graph (fp16, batch 32, channels-last, as ait compiles it for a GPU, here on fake CUDA tensors),
compiled for sm_90 with the configuration the launch heuristics give it, by Triton's own LLVM and
ptxas on this CPU (no GPU): registers, stack (where ptxas puts spills) and SASS instructions.

    python benchmarks/results/cpu-epyc/hopper_audit/audit.py convnext_tiny [resnet50 ...]
    python benchmarks/results/cpu-epyc/hopper_audit/audit.py --depthwise mobilenet_v3_large ...

``--depthwise``: every depthwise convolution through the template (``gemm_backends=("triton",)``)
with the configuration its heuristic gives, as ``autotune`` would measure it against cuDNN.
``--gemm``: the same for the GEMM template (``gemm_configs.heuristic``'s configuration, tiles
launched classically, not persistent).

Needs a torch that fakes CUDA tensors for torchvision models (2.14.1 here) and a Triton with a
bundled ptxas. Integer arguments are compiled unspecialised (i32) and every pointer 16-byte aligned.
"""
from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import tempfile

import torch
import torchvision
import triton
from torch._functorch.aot_autograd import aot_module_simplified
from torch._subclasses.fake_tensor import FakeTensorMode
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import depthwise, runtime
from ait_dynamo.kernels.wrapper import generate_wrapper
from ait_dynamo.passes.decompositions import decomposition_table
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.pipeline import run_passes

TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
TRITON_DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.int64: "i64",
                 torch.int32: "i32", torch.bool: "i1", torch.int8: "i8", torch.uint8: "u8"}


def _dtypes(work: torch.fx.GraphModule, source: str) -> dict[str, torch.dtype]:
    found = {n.name: n.meta["val"].dtype for n in work.graph.nodes
             if isinstance(n.meta.get("val"), torch.Tensor)}
    for name, dtype in re.findall(r"(\w+) = _alloc\([^\n]*?torch\.(\w+)\)", source):
        found[name] = getattr(torch, dtype)
    return found


def _config(kernel) -> tuple[dict[str, int], int]:
    xnumel = math.prod(kernel.xnumel)
    if kernel.kind == "pointwise":
        block, warps = runtime.pointwise_config(xnumel)
        return {"XBLOCK": block}, warps
    rnumel = math.prod(kernel.rnumel)
    xblock, rblock, warps = runtime.reduction_config(xnumel, rnumel, kernel.persistent, kernel.column)
    return {"XBLOCK": xblock, "RBLOCK": rblock}, warps


def _compile(kernel, dtypes, constexprs, warps, folder, stages: int | None = None) -> str:
    function = re.search(r"^def (\w+)\(", kernel.source, re.M).group(1)  # a reused kernel keeps its first name
    path = os.path.join(folder, f"{kernel.name}.py")
    with open(path, "w") as f:
        f.write("import triton\nimport triton.language as tl\nfrom ait_dynamo.kernels import tmath\n" + kernel.source)
    spec = importlib.util.spec_from_file_location(kernel.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = getattr(module, function)
    params = re.search(rf"def {function}\((.*?)\):", kernel.source, re.S).group(1)
    names = [p.split(":")[0].strip() for p in params.split(",") if p.strip()]
    pointers = [n for n in names if re.fullmatch(r"(in|out)_ptr\d+", n)]
    signature, attrs = {}, {}
    for index, name in enumerate(names):
        if name in pointers:
            wrapper_name = kernel.args.tensors[pointers.index(name)]
            signature[name] = "*" + TRITON_DTYPES[dtypes.get(wrapper_name, torch.float16)]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name in constexprs:
            signature[name] = "constexpr"
        else:
            signature[name] = "i32"
    compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps, **({"num_stages": stages} if stages else {})})
    cubin = os.path.join(folder, "k.cubin")
    with open(cubin, "wb") as f:
        f.write(compiled.asm["cubin"])
    usage = subprocess.run([os.path.join(TOOLS, "cuobjdump"), "-res-usage", cubin], capture_output=True, text=True).stdout
    sass = subprocess.run([os.path.join(TOOLS, "nvdisasm"), "-c", cubin], capture_output=True, text=True).stdout
    instructions = sum(bool(re.match(r"\s+/\*[0-9a-f]{4,}\*/", line)) for line in sass.splitlines())
    regs, stack = re.search(r"REG:(\d+)", usage).group(1), re.search(r"STACK:(\d+)", usage).group(1)
    return f"{regs:>4} {stack:>6} {instructions:>6}"


def audit(name: str, template: str) -> None:
    options = {"cache_dir": tempfile.mkdtemp(), **({"gemm_backends": ("triton",)} if template else {})}
    config = AitConfig.create(options, environ={})
    if template:
        from ait_dynamo.kernels import gemm_choice

        gemm_choice.triton_runs_on = lambda device: True  # the template on (fake) CUDA

    def capture(gm, example_inputs):
        work = run_passes(gm, config)
        plan, _ = build_plan(work, config)
        module = generate_wrapper(plan, work, "audit", triton_runs_on=lambda device: True)
        dtypes = _dtypes(work, module.source)
        folder = tempfile.mkdtemp()
        print(f"## {name}: {len(module.kernels)} generated kernels\n\n| kernel | kind | size | config | warps | regs | stack | SASS |\n|---|---|---|---|---:|---:|---:|---:|")
        seen = set()
        for kernel in module.kernels:
            if template != {"conv": "--depthwise", "gemm": "--gemm"}.get(kernel.kind, ""):
                continue
            stages = None
            if kernel.kind == "gemm":
                from ait_dynamo.kernels import gemm_configs

                batch, m, n, k = kernel.gemm
                chosen = gemm_configs.heuristic(batch, m, n, k, kernel.gemm_dtype)
                persistent = "PERSISTENT" in re.search(r"\((.*?)\):", kernel.source, re.S).group(1)
                constexprs = gemm_configs.constexprs(tuple(chosen[:6]), k, False, 1 if persistent else None)
                warps, stages = chosen[4], chosen[5]
                size = f"{batch}x{m}x{n}x{k}"
            elif kernel.kind == "conv":
                shape = tuple(kernel.gemm)  # depthwise.problem of the convolution
                chosen = depthwise.heuristic(shape)
                constexprs, warps = depthwise.constexprs(chosen), chosen[2]
                size = "x".join(map(str, shape))
            else:
                constexprs, warps = _config(kernel)
                size = f"{math.prod(kernel.xnumel)}" + (f"x{math.prod(kernel.rnumel)}" if kernel.kind == "reduction" else "")
            if (kernel.name, size, str(constexprs)) in seen:
                continue
            seen.add((kernel.name, size, str(constexprs)))
            try:
                row = _compile(kernel, dtypes, constexprs, warps, folder, stages)
            except Exception as error:  # noqa: BLE001 - a probe: record and go on
                row = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}"
            cells = " | ".join(row.split()) if not row.startswith("failed") else row + " | | "
            print(f"| {kernel.name} | {kernel.kind} | {size} | {constexprs} | {warps} | {cells} |", flush=True)
        return gm

    model = getattr(torchvision.models, name)().eval().half().to(memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to("cuda:0")
        x = torch.empty(32, 3, 224, 224, dtype=torch.float16, device="cuda:0")

    class Tupled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return (self.inner(x),)

    with torch.no_grad():
        aot_module_simplified(torch.fx.symbolic_trace(Tupled(model)), [x], fw_compiler=capture,
                              decompositions=decomposition_table(config), keep_inference_input_mutations=True)


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    chosen_template = next((a for a in sys.argv[1:] if a in ("--depthwise", "--gemm")), "")
    for model_name in names:
        audit(model_name, chosen_template)
