"""SASS instruction counts of the depthwise template's tap loop, compiled for sm_90 on the CPU (Triton's
own LLVM, ptxas and cuobjdump; no GPU): ConvNeXt-T's first 7x7 layer (96 channels, 56x56, batch 32,
fp16, channels-last, bias), every configuration of the three tilings. For each: registers, stack,
the instructions of the loop over the kernel's rows (one kernel row: 7 taps for every output the
thread holds; for row tiles one input row) by opcode, and instructions per tap and output (the loop's
instructions x its trips over 49 taps of the thread's outputs).

    env -u TRITON_INTERPRET python benchmarks/results/cpu-epyc/depthwise_columns_sass/sass_count.py > counts.md
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F


def kernel_source() -> str:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from ait_dynamo.config import AitConfig
    from ait_dynamo.kernels import gemm_choice
    from ait_dynamo.kernels.wrapper import generate_wrapper
    from ait_dynamo.passes.fusion import build_plan
    from ait_dynamo.passes.pipeline import run_passes

    gemm_choice.triton_runs_on = lambda device: True  # the template for a CUDA convolution
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty_strided((32, 96, 56, 56), (301056, 1, 5376, 96), device="cuda", dtype=torch.float16)
        w = torch.empty(96, 1, 7, 7, device="cuda", dtype=torch.float16)
        b = torch.empty(96, device="cuda", dtype=torch.float16)
        gm = make_fx(lambda x, w, b: F.conv2d(x, w, b, 1, 3, 1, 96), tracing_mode="fake")(x, w, b)
    with tempfile.TemporaryDirectory() as cache:
        config = AitConfig.create({"cache_dir": cache, "gemm_backends": ("triton",)}, environ={})
        work = run_passes(gm, config)
        plan, _ = build_plan(work, config)
        module = generate_wrapper(plan, work, "probe", triton_runs_on=lambda device: True)
    (kernel,) = [k for k in module.kernels if k.kind == "conv"]
    return "import triton\nimport triton.language as tl\n" + kernel.source


def main() -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ait_dynamo.kernels import depthwise

    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    work = tempfile.mkdtemp()
    path = os.path.join(work, "depthwise_kernel.py")
    with open(path, "w") as f:
        f.write(kernel_source())
    spec = importlib.util.spec_from_file_location("depthwise_kernel", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"triton {triton.__version__}, sm_90; ConvNeXt-T's 96-channel 7x7 layer\n")
    print("| config (BLOCK_M, BLOCK_N, warps, ROWS, COLS) | registers | stack | loop instructions (one trip) | FFMA | per tap and output | top opcodes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for config in (*depthwise.CONFIGS, *depthwise.ROW_CONFIGS, *depthwise.COLUMN_CONFIGS):
        values = depthwise.constexprs(config)
        signature = {name: "*fp16" for name in ("in_ptr0", "in_ptr1", "in_ptr2", "out_ptr0")}
        signature.update({name: "constexpr" for name in values})
        aligned = {(i,): [["tt.divisibility", 16]] for i in range(4)}  # as a launch specializes them
        compiled = triton.compile(ASTSource(module.kernel_0, signature, constexprs=values, attrs=aligned),
                                  target=GPUTarget("cuda", 90, 32), options={"num_warps": config[2]})
        cubin = os.path.join(work, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", cubin], capture_output=True, text=True,
                               check=True).stdout
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", cubin], capture_output=True, text=True,
                              check=True).stdout
        lines = re.findall(r"/\*([0-9a-f]{4})\*/\s+([^;]*);", sass)
        addresses = [int(a, 16) for a, _ in lines]
        loop = None  # the tap-row loop: the backward conditional branch
        for i, (_, op) in enumerate(lines):
            target = re.search(r"@!?U?P\d\s+BRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))", op)
            if target and target.group(1) and int(target.group(1), 16) < addresses[i]:
                loop = (addresses.index(int(target.group(1), 16)), i)
        body = [op for _, op in lines[loop[0]:loop[1] + 1]] if loop else []
        opcodes = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", op).split()[0].split(".")[0] for op in body)
        ffma = opcodes.get("FFMA", 0)
        # a trip multiplies 7 horizontal taps into every output the thread holds (FFMA / 7 of them);
        # pixel and column tiles loop over the 7 kernel rows, row tiles over ROWS + 6 input rows
        trips = config[3] + 6 if config[3] else 7
        per_tap = trips * len(body) / (49 * ffma / 7) if ffma else float("nan")
        registers, stack = (re.search(pattern, usage).group(1) for pattern in (r"REG:(\d+)", r"STACK:(\d+)"))
        print(f"| {config} | {registers} | {stack} "
              f"| {len(body)} | {ffma} | {per_tap:.2f} | "
              + ", ".join(f"{k} {v}" for k, v in opcodes.most_common(5)) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
