"""Run the main job's SimpleMLP (hidden 256, batch 256, one thread) N times under one backend, with
the timed loop inside ``operator.call`` so that callgrind counts only it::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=_operator_call --cache-sim=yes \\
        --D1=32768,8,64 --LL=1048576,16,64 python callgrind_loop.py eager 20
    valgrind ... python callgrind_loop.py dyn_eager 20

(an LL of 1 MiB models this CPU's L2). Numbers in README.md.
"""

import operator
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from benchmarks.models import SimpleMLP  # noqa: E402

torch.set_num_threads(1)
mode, calls = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = SimpleMLP(256).eval()
x = torch.randn(256, 256)
fn = {"eager": lambda: model, "dyn_eager": lambda: torch.compile(model, backend="eager"),
      "ait": lambda: torch.compile(model, backend="ait")}[mode]()


def loop() -> None:
    for _ in range(calls):
        fn(x)


with torch.no_grad():
    for _ in range(5):
        fn(x)
    operator.call(loop)
