"""Does an alternating output address slow ait's direct call the way Dynamo's frame does?
Variants of probe.py's table, at batch 256, 1 thread: the direct call holding its previous output
(so that each call's output lands at another address), and with Python allocations before it.

    python benchmarks/results/cpu-epyc/dynamo_frame/alternating_output.py
"""
import sys, statistics, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))
sys.argv = ["x"]
import importlib.util
spec = importlib.util.spec_from_file_location("p", str(__import__("pathlib").Path(__file__).with_name("probe.py")))
p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p)
from benchmarks.models import SimpleMLP
torch.set_num_threads(1); torch.manual_seed(0)
m = SimpleMLP(256).eval()
with torch.no_grad():
    fns = p.variants(m)
    direct = fns["ait call, direct"]
    held = [None]
    def direct_holding(x):
        out = direct(x); held[0] = out; return out   # the previous output alive while the next is made
    junk = []
    def direct_small_allocs(x):
        junk.append([object() for _ in range(50)]); junk.pop(0) if len(junk) > 3 else None
        return direct(x)
    chosen = {"eager": fns["eager"], "direct": direct, "direct, previous output held": direct_holding,
              "direct + python allocs": direct_small_allocs, "backend=ait": fns["backend=ait"]}
    x = torch.randn(256, 256)
    times = p.interleaved(chosen, x, 300)
for name, samples in times.items():
    ratios = sorted(e / s for e, s in zip(times["eager"], samples)); q = len(ratios) // 4
    print(f"  {name:30s} {statistics.median(samples):7.3f} ms   {statistics.median(ratios):.3f} ({ratios[q]:.3f}-{ratios[3*q]:.3f})")
