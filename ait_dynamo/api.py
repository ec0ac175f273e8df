"""``memory_efficient_fusion``: the seed tutorial's wrapper, with our partitioner and compiler."""

from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn
from torch._functorch.aot_autograd import aot_function, aot_module
from torch.utils._pytree import tree_leaves

from ait_dynamo.backend import aot_compilers
from ait_dynamo.config import AitConfig
from ait_dynamo.devices import device_types, for_devices


class _PerDevice:
    """AOTAutograd's wrapper of ``fn``, built on the first call from each set of devices: its
    decompositions and partitioner depend on whether Triton runs there (``devices.for_devices``),
    and AOTAutograd fixes both when it wraps."""

    def __init__(self, fn: Callable[..., Any] | nn.Module, config: AitConfig):
        self.fn = fn
        self.config = config
        self.wrapped: dict[frozenset[str], Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = tree_leaves((args, kwargs))
        if isinstance(self.fn, nn.Module):
            values += [*self.fn.parameters(), *self.fn.buffers()]
        devices = device_types(values)
        wrapped = self.wrapped.get(devices)
        if wrapped is None:
            compilers = aot_compilers(for_devices(self.config, values))
            wrap = aot_module if isinstance(self.fn, nn.Module) else aot_function
            wrapped = self.wrapped[devices] = wrap(self.fn, **compilers)
        return wrapped(*args, **kwargs)


class _PerDeviceModule(nn.Module):
    """A module's wrapper stays a module: its parameters are the wrapped module's."""

    def __init__(self, module: nn.Module, config: AitConfig):
        super().__init__()
        self.module = module
        self._per_device = _PerDevice(module, config)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._per_device(*args, **kwargs)


def memory_efficient_fusion(fn: Callable[..., Any] | nn.Module, **options: Any) -> Any:
    """Wrap a function or ``nn.Module`` with AOTAutograd, the min-cut rematerialization
    partitioner and the ait compiler. ``options`` are :class:`AitConfig` fields.

    Like functorch's ``memory_efficient_fusion``: the result is called like ``fn`` and computes
    the same values and gradients, saving fewer activations for backward. Where Triton cannot run
    the tensors of a call (the CPU without ``TRITON_INTERPRET=1``), that call's graphs keep ATen's
    composite ops whole and save what the forward computed, as ``torch.compile(backend="ait")``
    does (``ait_dynamo/devices.py``).
    """
    config = AitConfig.create(options)
    if isinstance(fn, nn.Module):
        return _PerDeviceModule(fn, config)
    return functools.wraps(fn)(_PerDevice(fn, config))
