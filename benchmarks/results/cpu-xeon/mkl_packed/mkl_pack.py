import torch, time
from torch.utils import benchmark
torch.manual_seed(0)
def t(fn):
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.3).median*1e6
for M,K,N in [(512,256,768),(512,256,256),(512,256,1024),(512,1024,256),(256,512,2048),(256,2048,512)]:
    x=torch.randn(M,K); w=torch.randn(N,K); b=torch.randn(N)
    packed=torch.ops.mkl._mkl_reorder_linear_weight(w, M)
    ref=torch.addmm(b,x,w.t())
    out=torch.ops.mkl._mkl_linear(x, packed, w, b, M)
    err=(out-ref).abs().max().item()
    r=[]
    for _ in range(2):
        a=t(lambda: torch.addmm(b,x,w.t())); p=t(lambda: torch.ops.mkl._mkl_linear(x, packed, w, b, M)); l=t(lambda: torch.nn.functional.linear(x,w,b))
        r.append((a,p,l))
    print(M,K,N, "addmm %.0f us, mkl packed %.0f us, linear %.0f; err %.1e"%(min(x[0] for x in r),min(x[1] for x in r),min(x[2] for x in r),err))
