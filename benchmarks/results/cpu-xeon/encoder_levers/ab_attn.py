import torch, sys, time, statistics
sys.path.insert(0,'.')
from benchmarks.models import EncoderBlock
torch.manual_seed(0)
mk=lambda: EncoderBlock(256,8,1024).eval(); x=torch.randn(8,64,256)
eager=mk(); a=mk(); b=mk(); a.load_state_dict(eager.state_dict()); b.load_state_dict(eager.state_dict())
with torch.no_grad():
    fa=torch.compile(a,backend="ait",options={"cache_dir":"/tmp/ab1","attention_min_keys":64,"onednn_gemms":"never"}); fa(x)
    fb=torch.compile(b,backend="ait",options={"cache_dir":"/tmp/ab2","attention_min_keys":0,"onednn_gemms":"never"}); fb(x)
    print("agree", (fb(x)-eager(x)).abs().max().item())
    fns={"eager":eager,"ait_explicit":fa,"ait_sdpa":fb}
    for f in fns.values():
        for _ in range(20): f(x)
    res={k:[] for k in fns}
    for r in range(30):
        for k,f in fns.items():
            t=time.perf_counter()
            for _ in range(10): f(x)
            res[k].append((time.perf_counter()-t)/10*1e3)
    e=res["eager"]
    for k in fns: print(k, "%.3f ms"%statistics.median(res[k]), "eager/k %.3f"%statistics.median([e[i]/res[k][i] for i in range(30)]))
