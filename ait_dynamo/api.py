"""``memory_efficient_fusion``: the seed tutorial's wrapper, with our partitioner and compiler."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torch._functorch.aot_autograd import aot_function, aot_module

from ait_dynamo.backend import aot_compilers
from ait_dynamo.config import AitConfig


def memory_efficient_fusion(fn: Callable[..., Any] | nn.Module, **options: Any) -> Any:
    """Wrap a function or ``nn.Module`` with AOTAutograd, the min-cut rematerialization
    partitioner and the ait compiler. ``options`` are :class:`AitConfig` fields.

    Like functorch's ``memory_efficient_fusion``: the result is called like ``fn`` and computes
    the same values and gradients, saving fewer activations for backward.
    """
    config = AitConfig.create(options)
    kwargs = aot_compilers(config)
    if isinstance(fn, nn.Module):
        return aot_module(fn, **kwargs)
    return aot_function(fn, **kwargs)
