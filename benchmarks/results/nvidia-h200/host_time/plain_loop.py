"""Why ait's wall time (CUDA events) exceeds its host time on the encoder block at batch 1."""
import statistics, time, torch
from benchmarks.models import EncoderBlock
import ait_dynamo  # noqa: F401

torch.manual_seed(0)
model = EncoderBlock(768, 12, 3072).cuda().half().eval()
x = torch.randn(1, 196, 768, device="cuda", dtype=torch.half)
for name, fn in [("eager", model), ("ait", torch.compile(model, backend="ait", dynamic=False)),
                 ("inductor", torch.compile(model, backend="inductor", dynamic=False))]:
    with torch.no_grad():
        for _ in range(20):
            fn(x)
        torch.cuda.synchronize()
        host, wall, after = [], [], []
        for _ in range(200):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter(); a.record(); y = fn(x); t1 = time.perf_counter(); b.record(); del y
            torch.cuda.synchronize(); t2 = time.perf_counter()
            host.append((t1 - t0) * 1e6); wall.append(a.elapsed_time(b) * 1e3); after.append((t2 - t0) * 1e6)
        q = lambda v: f"p10 {sorted(v)[20]:.0f} p50 {statistics.median(v):.0f} p90 {sorted(v)[180]:.0f}"
        print(f"{name:9s} host {q(host)} | event wall {q(wall)} | host to sync {q(after)}")
    if name == "ait":
        from torch.profiler import ProfilerActivity, profile
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                fn(x)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
