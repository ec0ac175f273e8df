import torch, sys, time, statistics, logging
sys.path.insert(0,'.')
from benchmarks.models import EncoderBlock, SimpleMLP
from ait_dynamo.kernels import mkl_linear
torch.manual_seed(0)
which=sys.argv[1]
if which=="enc":
    mk=lambda: EncoderBlock(256,8,1024).eval(); x=torch.randn(8,64,256)
else:
    mk=lambda: SimpleMLP(256).eval(); x=torch.randn(256,256)
eager=mk(); a=mk(); b=mk(); a.load_state_dict(eager.state_dict()); b.load_state_dict(eager.state_dict())
logging.basicConfig(level=logging.INFO, format="%(message)s"); logging.getLogger("torch").setLevel(logging.WARNING)
with torch.no_grad():
    fa=torch.compile(a,backend="ait",options={"cache_dir":"/tmp/ab1"}); fa(x)
    real=mkl_linear.available; mkl_linear.available=lambda: False
    fb=torch.compile(b,backend="ait",options={"cache_dir":"/tmp/ab2"}); fb(x)
    mkl_linear.available=real
    fns={"eager":eager,"ait_mkl":fa,"ait_nomkl":fb}
    for f in fns.values():
        for _ in range(20): f(x)
    res={k:[] for k in fns}
    for r in range(30):
        for k,f in fns.items():
            t=time.perf_counter()
            for _ in range(10): f(x)
            res[k].append((time.perf_counter()-t)/10*1e3)
    e=res["eager"]
    for k in fns: print(k, "%.3f ms"%statistics.median(res[k]), "ratio eager/k %.3f"%statistics.median([e[i]/res[k][i] for i in range(30)]))
