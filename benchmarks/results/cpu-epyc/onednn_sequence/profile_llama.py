"""torch.profiler's per-op CPU time of the small Llama (inference, scale small, batch 2) compiled
by ait with the sequence-only rule (``onednn_gemms="auto"`` with ``_best_in_graph`` switched off,
as ``ab_models.py``'s "sequence") and with ``"never"``: where oneDNN's calls spend their time
inside the graph. Run from the repository root:

    python benchmarks/results/cpu-epyc/onednn_sequence/profile_llama.py
"""

from __future__ import annotations

import sys
import tempfile
from unittest import mock

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, ".")
from ait_dynamo.passes import onednn_gemm  # noqa: E402
from benchmarks.model_suite import import_transformers, model_workloads  # noqa: E402


def main() -> None:
    import_transformers()
    built = {w.name: w for w in model_workloads()}["hf_llama_small"].build("small", 2, torch.device("cpu"))
    for label, mode in (("sequence", "auto"), ("never", "never")):
        compiled = torch.compile(built.module, backend="ait", options={"cache_dir": tempfile.mkdtemp(), "onednn_gemms": mode})
        with mock.patch.object(onednn_gemm, "_best_in_graph", lambda *args: None), torch.no_grad():
            for _ in range(30):
                compiled(*built.inputs)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(100):
                    compiled(*built.inputs)
        print(label)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
