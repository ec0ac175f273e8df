"""Channels-last on the CPU: eager NCHW vs eager NHWC, ait with channels_last off / on; inference and training."""
import sys, time, statistics, torch, torchvision
sys.path.insert(0, ".")
torch.manual_seed(0)
def timeit(fns, rounds=12, inner=3):
    times = {k: [] for k in fns}
    for f in fns.values(): f(); f()
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            for _ in range(inner): f()
            times[k].append((time.perf_counter() - t) / inner * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}
names = sys.argv[1].split(","); batch = int(sys.argv[2]); size = int(sys.argv[3]); train = len(sys.argv) > 4 and sys.argv[4] == "train"
for name in names:
    model = getattr(torchvision.models, name)(weights=None)
    model = model.train() if train else model.eval()
    x = torch.randn(batch, 3, size, size)
    xl = x.contiguous(memory_format=torch.channels_last)
    import copy
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    def mk(m, inp, compiled=None):
        fn = compiled if compiled is not None else m
        if train:
            def step():
                out = fn(inp); out.float().sum().backward()
            return step
        def run():
            with torch.no_grad(): fn(inp)
        return run
    fns = {"eager_nchw": mk(model, x), "eager_nhwc": mk(model_cl, xl)}
    for mode in ("off", "on"):
        torch._dynamo.reset()
        c = torch.compile(copy.deepcopy(model), backend="ait", options={"channels_last": mode})
        fns[f"ait_{mode}"] = mk(None, x, c)
    t = timeit(fns)
    base = t["eager_nchw"]
    print(name, "train" if train else "infer", batch, size, " ".join(f"{k}={v:.2f}ms({base/v:.2f}x)" for k, v in t.items()), flush=True)
