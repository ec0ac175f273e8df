import torch, sys, time, statistics
sys.path.insert(0,'.')
from benchmarks.models import SimpleMLP, EncoderBlock
torch.manual_seed(0)
w=sys.argv[1]
mk=(lambda: SimpleMLP(256).eval()) if w=="mlp" else (lambda: EncoderBlock(256,8,1024).eval())
x=torch.randn(256,256) if w=="mlp" else torch.randn(8,64,256)
eager=mk(); models={}
with torch.no_grad():
    fns={"eager":eager}
    for mode in ("never","always"):
        m=mk(); m.load_state_dict(eager.state_dict())
        fns["ait_"+mode]=torch.compile(m,backend="ait",options={"cache_dir":"/tmp/ab_"+mode,"onednn_gemms":mode}); fns["ait_"+mode](x)
    for f in fns.values():
        for _ in range(20): f(x)
    res={k:[] for k in fns}
    for r in range(30):
        for k,f in fns.items():
            t=time.perf_counter()
            for _ in range(10): f(x)
            res[k].append((time.perf_counter()-t)/10*1e3)
    e=res["eager"]
    print(w, " ".join("%s %.3f ms (%.3f)"%(k,statistics.median(res[k]),statistics.median([e[i]/res[k][i] for i in range(30)])) for k in fns))
