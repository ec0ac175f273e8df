"""Bytes the forward saves for the backward under ait's partitioner, with and without the snapshots
of inputs the forward overwrites (``partitioners/snapshots.py``), for torchvision models in
training mode (2x3x64x64). Usage, from the repository root: python
benchmarks/results/cpu-epyc/snapshots/saved_bytes.py (torchvision needed)."""
from __future__ import annotations

import os
import sys

import torch
import torchvision

sys.path.insert(0, os.getcwd())
import ait_dynamo.partitioners as partitioners  # noqa: E402
from ait_dynamo.config import AitConfig  # noqa: E402
from ait_dynamo.partitioners import REPORTS  # noqa: E402
from benchmarks.partition_bench import capture_joint_graph  # noqa: E402


def saved_bytes(joint, budget: float | None) -> int:
    config = AitConfig.create({"memory_budget": budget} if budget else {}, environ={})
    partitioners.partition_function(config)(joint.copy(), None, num_fwd_outputs=joint.num_fwd_outputs,
                                            static_lifetime_input_indices=joint.static_lifetime_input_indices)
    return REPORTS[-1].saved_bytes


torch.manual_seed(0)
print(f"torch {torch.__version__}")
for name in ("resnet18", "mobilenet_v3_small"):
    joint = capture_joint_graph(getattr(torchvision.models, name)().train(), torch.randn(2, 3, 64, 64))
    for budget in (None, 0.5):
        with_snapshots = saved_bytes(joint, budget)
        original = partitioners.snapshot_mutated_inputs
        partitioners.snapshot_mutated_inputs = lambda graph: False  # the readers read the input itself
        try:
            without = saved_bytes(joint, budget)
        finally:
            partitioners.snapshot_mutated_inputs = original
        print(f"{name} memory_budget={budget}: {with_snapshots} saved bytes with snapshots, {without} without")
