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


def partition_function(config: Any) -> Callable[..., Any]:
    """The ``partition_fn`` for AOTAutograd that ``config.partitioner`` names.

    ``"min_cut"``: ours (flow network with byte capacities, fusion-aware cost model, memory
    budget ``config.memory_budget``, report in the log and ``config.debug_dir``);
    ``"functorch"``: functorch's min-cut partitioner (for comparisons);
    ``"default"``: save everything the forward computed.
    """
    if config.partitioner == "default":
        return default_partition
    if config.partitioner == "functorch":
        return functorch_min_cut_rematerialization_partition
    return functools.partial(min_cut_rematerialization_partition, config=config)


__all__ = [
    "REPORTS",
    "PartitionReport",
    "default_partition",
    "functorch_min_cut_rematerialization_partition",
    "min_cut_rematerialization_partition",
    "partition_function",
]
