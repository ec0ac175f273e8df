"""The CPU main job's encoder block: explicit attention (attention_min_keys=64, the default)
against SDPA (0), oneDNN off on both. Run from the repository root."""
import sys

import torch

sys.path[:0] = [".", "benchmarks/results/cpu-xeon"]
from ab import compare  # noqa: E402
from benchmarks.models import EncoderBlock  # noqa: E402

torch.manual_seed(0)
eager = EncoderBlock(256, 8, 1024).eval()
x = torch.randn(8, 64, 256)
fns = {"eager": eager}
for name, keys in (("ait_explicit", 64), ("ait_sdpa", 0)):
    model = EncoderBlock(256, 8, 1024).eval()
    model.load_state_dict(eager.state_dict())
    fns[name] = torch.compile(model, backend="ait", options={"cache_dir": f"/tmp/ab_{name}", "attention_min_keys": keys,
                                                              "onednn_gemms": "never"})
    with torch.no_grad():
        torch.testing.assert_close(fns[name](x), eager(x))
compare("encoder", fns, x)
