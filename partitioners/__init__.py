"""Partition functions that split AOTAutograd's joint graph into forward and backward graphs."""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch._functorch.partitioners import default_partition
from torch._functorch.partitioners import (
    min_cut_rematerialization_partition as functorch_min_cut_rematerialization_partition,
)

from ait_dynamo.partitioners.mincut import min_cut_rematerialization_partition
from ait_dynamo.partitioners.report import REPORTS, PartitionReport
from ait_dynamo.partitioners.snapshots import drop_unsaved_snapshots, snapshot_mutated_inputs


def partition_function(config: Any) -> Callable[..., Any]:
    """The ``partition_fn`` for AOTAutograd that ``config.partitioner`` names.

    ``"min_cut"``: ours (flow network with byte capacities, fusion-aware cost model, memory
    budget ``config.memory_budget``, report in the log and ``config.debug_dir``);
    ``"functorch"``: functorch's min-cut partitioner (for comparisons);
    ``"default"``: save everything the forward computed.
    """
    if config.partitioner == "default":
        chosen: Callable[..., Any] = default_partition
    elif config.partitioner == "functorch":
        chosen = functorch_min_cut_rematerialization_partition
    else:
        chosen = functools.partial(min_cut_rematerialization_partition, config=config)
    return functools.partial(_mark_user_outputs, chosen)


USER_OUTPUTS_META = "ait_num_user_outputs"


def _mark_user_outputs(partition: Callable[..., Any], joint_module: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs ``partition`` and records on the forward module how many of its outputs are the
    caller's (the rest are saved for the backward): CUDA-graph replay copies only those out.
    Readers of the old value of an input the forward overwrites read a snapshot of it, which the
    forward keeps only where the backward reads it (partitioners/snapshots.py)."""
    if snapshot_mutated_inputs(joint_module.graph):
        joint_module.recompile()
    fw_module, bw_module = partition(joint_module, *args, **kwargs)
    drop_unsaved_snapshots(fw_module)
    if "num_fwd_outputs" in kwargs:
        fw_module.meta[USER_OUTPUTS_META] = kwargs["num_fwd_outputs"]
    return fw_module, bw_module


__all__ = [
    "REPORTS",
    "USER_OUTPUTS_META",
    "PartitionReport",
    "default_partition",
    "functorch_min_cut_rematerialization_partition",
    "min_cut_rematerialization_partition",
    "partition_function",
]
