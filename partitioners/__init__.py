"""Partition functions that split AOTAutograd's joint graph into forward and backward graphs."""

from __future__ import annotations

from typing import Any, Callable

from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition


def partition_function(config: Any) -> Callable[..., Any]:
    """The ``partition_fn`` for AOTAutograd that ``config.partitioner`` names.

    ``"min_cut"`` is functorch's fusion-aware min-cut rematerialization partitioner until our own
    (with a memory budget) lands; ``"default"`` saves everything the forward computed.
    """
    if config.partitioner == "default":
        return default_partition
    return min_cut_rematerialization_partition


__all__ = ["default_partition", "min_cut_rematerialization_partition", "partition_function"]
