"""ResNet's basic block (tests/test_layout.py BLOCKS["resnet"]), float32, channels-last, one
training step on the CPU under Triton's interpreter: each output's and gradient's error against
float64, ait (with kernels/batch_norm_channels.py) over aot_eager (ATen's ops on the same graph),
as the ratio of largest errors and of RMSEs, for four seeds.

    TRITON_INTERPRET=1 python benchmarks/results/nvidia-h200/bn_channels/accuracy_cpu.py
"""
import copy, sys, torch, torch._dynamo
sys.path.insert(0, "tests")  # run from the repository root
from test_layout import BLOCKS
torch.backends.cudnn.allow_tf32 = False
def run(fn, model, x):
    x = x.clone().requires_grad_()
    out = fn(x)
    out.sum().backward()
    return [out.detach(), x.grad] + [p.grad for p in model.parameters()]
for seed in range(4):
    torch.manual_seed(seed)
    base = BLOCKS["resnet"]().train()
    x = torch.randn(8, 5, 20, 20).to(memory_format=torch.channels_last)
    results = {}
    for name in ("ait", "aot_eager", "fp64"):
        torch._dynamo.reset()
        m = copy.deepcopy(base)
        if name == "fp64":
            m = m.double(); results[name] = run(m, m, x.double()); continue
        c = torch.compile(m, backend=name, options={"channels_last": "on"} if name == "ait" else None, dynamic=False)
        results[name] = run(c, m, x)
    for i, (a, e, r) in enumerate(zip(results["ait"], results["aot_eager"], results["fp64"])):
        ea, ee = (a.double() - r).abs(), (e.double() - r).abs()
        ratio_max = ea.max().item() / max(ee.max().item(), 1e-30)
        ratio_rmse = ea.pow(2).mean().sqrt().item() / max(ee.pow(2).mean().sqrt().item(), 1e-30)
        print(seed, i, tuple(a.shape), f"max {ratio_max:.2f} rmse {ratio_rmse:.2f}")
