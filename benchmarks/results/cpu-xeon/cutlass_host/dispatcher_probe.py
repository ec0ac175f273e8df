import torch, timeit
from typing import Optional
@torch.library.custom_op("probe::f", mutates_args=(), device_types="cpu")
def f(a: torch.Tensor, b: torch.Tensor, bias: Optional[torch.Tensor], r: Optional[torch.Tensor], lib: str, act: str, alpha: float, beta: float) -> torch.Tensor:
    return torch.empty_like(a)
@f.register_fake
def _(a, b, bias, r, lib, act, alpha, beta): return a.new_empty(a.shape)
def direct(a, b, bias, r, lib, act, alpha, beta): return torch.empty_like(a)
a=torch.randn(4,4)
op=torch.ops.probe.f.default._op
for name, fn in (("op._op", op), ("direct", direct)):
    t=min(timeit.repeat(lambda: fn(a,a,a,None,"/x.so","gelu",1.0,1.0), number=20000, repeat=5))/20000*1e6
    print(name, f"{t:.2f} us")
