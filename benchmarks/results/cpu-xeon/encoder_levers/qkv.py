import torch, time, statistics
torch.manual_seed(0)
L,B,E=64,8,256
X=torch.randn(L*B,E); W=torch.randn(3*E,E); b=torch.randn(3*E)
def cur():
    y=torch.mm(X,W.t()).view(L,B,3*E).add_(b)
    return y.view(L,B,3,E).unsqueeze(0).transpose(0,-2).squeeze(-2).contiguous()
def three():
    return [torch.addmm(b[i*E:(i+1)*E], X, W[i*E:(i+1)*E].t()).view(L,B,E) for i in range(3)]
def batched():
    return torch.baddbmm(b.view(3,1,E), X.expand(3,L*B,E), W.view(3,E,E).transpose(1,2)).view(3,L,B,E)
r=cur()
print([ (r[i]-t).abs().max().item() for i,t in enumerate(three())], (r-batched()).abs().max().item())
fns={"cur":cur,"three":three,"baddbmm":batched}
for f in fns.values():
    for _ in range(10): f()
res={k:[] for k in fns}
for _ in range(30):
    for k,f in fns.items():
        t=time.perf_counter()
        for _ in range(10): f()
        res[k].append((time.perf_counter()-t)/10*1e6)
for k in fns: print(k, "%.0f us"%statistics.median(res[k]))
