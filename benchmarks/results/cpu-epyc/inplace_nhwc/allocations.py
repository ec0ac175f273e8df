"""ait's inference wrapper for a torchvision CNN generated on this CPU for fake CUDA tensors (fp16,
batch 32, channels-last as on a GPU): how many buffers its ``call`` allocates, how many kernel
outputs take over a dying buffer, and how many weights it copies NHWC. With ``--contiguous-only``
in-place takeover is restricted to contiguous buffers, as it was before this folder's change.

    python benchmarks/results/cpu-epyc/inplace_nhwc/allocations.py resnet50 [--contiguous-only]
"""
import re
import sys
import tempfile

import torch
import torchvision
from torch._functorch.aot_autograd import aot_module_simplified
from torch._subclasses.fake_tensor import FakeTensorMode

from ait_dynamo.config import AitConfig
from ait_dynamo.kernels import reuse
from ait_dynamo.kernels.wrapper import generate_wrapper
from ait_dynamo.passes import layout
from ait_dynamo.passes.decompositions import decomposition_table
from ait_dynamo.passes.fusion import build_plan
from ait_dynamo.passes.pipeline import run_passes

name = sys.argv[1]
if "--contiguous-only" in sys.argv:
    reuse._dense_in_any_order = reuse._dense_from_start
config = AitConfig.create({"cache_dir": tempfile.mkdtemp()}, environ={})


def capture(gm, example_inputs):
    work = run_passes(gm, config)
    plan, _ = build_plan(work, config)
    source = generate_wrapper(plan, work, "probe", triton_runs_on=lambda device: True).source
    body = source[source.index("    def call(args):"):source.index("call._boxed_call")]
    taken = len(re.findall(r"^ +\w+ = \w+$", body, flags=re.M))
    print(f"{name}: {body.count('_alloc(')} allocations a call, {taken} buffers taken over, "
          f"{len(layout.weight_copies(work))} weights copied NHWC, {body.count('_site.launch(')} kernel launches")
    return gm


with FakeTensorMode():
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda:0"):
        model = getattr(torchvision.models, name)().eval()
    torch.set_default_dtype(torch.float32)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
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
