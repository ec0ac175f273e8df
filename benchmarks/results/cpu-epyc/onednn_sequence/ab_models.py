"""One model compiled by ait four ways, timed interleaved with eager in one process
(``../../cpu-xeon/ab.py``, the main job's interleaving): each one's median ms, and the median over
rounds of eager's time over its own. Inference, ``torch.no_grad()``, scale small.

- ``auto``: ``onednn_gemms="auto"`` (each GEMM timed in sequence, the sets of winners timed in
  the whole graph);
- ``sequence``: ``"auto"`` with the whole-graph step switched off (``_best_in_graph`` returning
  None: the GEMMs at most 0.95x ATen's time in sequence go to oneDNN);
- ``never`` and ``always``.

Run from the repository root:

    python benchmarks/results/cpu-epyc/onednn_sequence/ab_models.py simple_mlp encoder_block hf_llama_small
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from unittest import mock

import torch

sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks/results/cpu-xeon")
from ab import compare  # noqa: E402
from ait_dynamo.passes import onednn_gemm  # noqa: E402
from benchmarks.model_suite import import_transformers, model_workloads  # noqa: E402
from benchmarks.workloads import WORKLOADS  # noqa: E402

BATCH = {"simple_mlp": 256, "encoder_block": 8, "lowering_model": 8}
VARIANTS = {"auto": "auto", "sequence": "auto", "never": "never", "always": "always"}


def main(names: list[str]) -> None:
    import_transformers()
    table = {w.name: w for w in [*WORKLOADS.values(), *model_workloads()]}
    for name in names:
        built = table[name].build("small", BATCH.get(name, 2), torch.device("cpu"))
        model = built.module
        torch._dynamo.reset()  # the models share a forward's code: Dynamo's limit of 8 recompiles
        fns = {"eager": model}
        for label, mode in VARIANTS.items():
            compiled = torch.compile(model, backend="ait",
                                     options={"cache_dir": tempfile.mkdtemp(), "onednn_gemms": mode})
            whole = mock.patch.object(onednn_gemm, "_best_in_graph", lambda *args: None) if label == "sequence" \
                else contextlib.nullcontext()
            onednn_gemm._decisions.clear()
            with whole, torch.no_grad():
                compiled(*built.inputs)  # compiles now
            fns[label] = compiled
        for _ in range(2):
            compare(name, fns, built.inputs[0])


if __name__ == "__main__":
    main(sys.argv[1:])
