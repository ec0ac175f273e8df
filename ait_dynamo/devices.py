"""Where a graph runs decides what ait does with it, once, at compile time.

Where Triton cannot run the graph's tensors (the CPU without ``TRITON_INTERPRET=1``), nothing is
generated: a fusion group would run its decomposed ops one by one through ATen, slower than ATen's
native composite kernels (layer_norm, softmax, gelu). So there fusion is off, which also keeps the
composite ops whole (``passes/decompositions.py`` hands AOTAutograd no table then), lets
``passes/reinplace.py`` write elementwise calls into dying buffers, and the default partition
(save what the forward computed) replaces the min-cut one, whose recomputations pay only when
they fuse into a backward kernel (unless a memory budget asks for them). With the interpreter, and
on CUDA, the configuration is left exactly as given.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable

import torch

from ait_dynamo.config import AitConfig
from ait_dynamo.kernels.runtime import triton_runs_on

log = logging.getLogger("ait_dynamo")


def device_types(values: Iterable[Any]) -> frozenset[str]:
    """The device types of the tensors among ``values``."""
    return frozenset(value.device.type for value in values if isinstance(value, torch.Tensor))


def for_devices(config: AitConfig, example_inputs: Iterable[Any]) -> AitConfig:
    """The configuration for a graph whose inputs are ``example_inputs`` (see the module doc)."""
    devices = device_types(example_inputs)
    if not devices or any(triton_runs_on(device) for device in devices) or not config.fusion:
        return config
    changes: dict[str, Any] = {"fusion": False}
    if config.partitioner == "min_cut" and config.memory_budget is None:
        changes["partitioner"] = "default"
    log.debug("graph on %s, where Triton does not run: %s", sorted(devices), changes)
    return dataclasses.replace(config, **changes)
