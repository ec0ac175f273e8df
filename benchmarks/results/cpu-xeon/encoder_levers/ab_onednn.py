"""The CPU main job's MLP (argv "mlp") or encoder block ("enc"): ait with oneDNN GEMMs forced
off ("never") and on ("always"). Run from the repository root."""
import sys

import torch

sys.path[:0] = [".", "benchmarks/results/cpu-xeon"]
from ab import compare  # noqa: E402
from benchmarks.models import EncoderBlock, SimpleMLP  # noqa: E402

torch.manual_seed(0)
which = sys.argv[1]
make = (lambda: SimpleMLP(256).eval()) if which == "mlp" else (lambda: EncoderBlock(256, 8, 1024).eval())
x = torch.randn(256, 256) if which == "mlp" else torch.randn(8, 64, 256)
eager = make()
fns = {"eager": eager}
for mode in ("never", "always"):
    model = make()
    model.load_state_dict(eager.state_dict())
    fns[f"ait_{mode}"] = torch.compile(model, backend="ait", options={"cache_dir": f"/tmp/ab_{mode}", "onednn_gemms": mode})
    with torch.no_grad():
        fns[f"ait_{mode}"](x)
compare(which, fns, x)
