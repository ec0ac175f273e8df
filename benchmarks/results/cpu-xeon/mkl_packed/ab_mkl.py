"""ait with and without MKL's packed GEMM as a candidate, against eager: argv "enc" (the CPU main
job's encoder block) or "mlp". Needs the attempt's code, on a checkout of e6dd449 (from its root):
``cp <this folder>/mkl_linear.py kernels/ && git apply <this folder>/attempt.patch``, and for the
second try also ``git apply <this folder>/interleaved_measurement.patch``. (The README's tables
were taken with this script's first version, in git at e6dd449, which timed its own rounds of 10
calls instead of ``ab.py``.)"""
import logging
import sys

import torch

sys.path[:0] = [".", "benchmarks/results/cpu-xeon"]
from ab import compare  # noqa: E402
from ait_dynamo.kernels import mkl_linear  # noqa: E402
from benchmarks.models import EncoderBlock, SimpleMLP  # noqa: E402

torch.manual_seed(0)
which = sys.argv[1]
make = (lambda: EncoderBlock(256, 8, 1024).eval()) if which == "enc" else (lambda: SimpleMLP(256).eval())
x = torch.randn(8, 64, 256) if which == "enc" else torch.randn(256, 256)
logging.basicConfig(level=logging.INFO, format="%(message)s")
logging.getLogger("torch").setLevel(logging.WARNING)
eager = make()
fns = {"eager": eager}
for name, packed in (("ait_mkl", True), ("ait_nomkl", False)):
    model = make()
    model.load_state_dict(eager.state_dict())
    available = mkl_linear.available
    if not packed:
        mkl_linear.available = lambda: False  # the candidate is decided at compile time, on the first call
    fns[name] = torch.compile(model, backend="ait", options={"cache_dir": f"/tmp/ab_{name}"})
    with torch.no_grad():
        fns[name](x)
    mkl_linear.available = available
compare(which, fns, x)
