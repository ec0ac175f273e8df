"""A hand-written Triton kernel at one grid and configuration, launched with the fewest Python
frames: the first call compiles it through :func:`runtime.launch`; later CUDA calls go straight to
its compiled launcher, as generated kernels' launch sites do (``kernels/launch_site.py`` has the
measurements).

Why: with training batch norm's reductions (``kernels/batch_norm_channels.py``) launched through
:func:`runtime.launch` on every call, ResNet-50's bf16 training step enqueued in 47.1 ms, and in
30.6 ms with this binding (two profiles on the H200, ``benchmarks/results/nvidia-h200/
bn_channels/``; Inductor 25.2 and 25.8 ms in them). :func:`runtime.launch` builds a key of every
argument's specialization per launch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ait_dynamo.kernels import runtime


class BoundKernel:
    """``kernel`` at ``grid`` with ``constexprs`` and ``num_warps``. Calls pass the kernel's
    arguments; the ints among them must be the same on every call (the compiled binary is
    specialised on them). A call whose tensors are not 16-byte aligned, or made while a
    profiler's launch hooks are set, goes through :func:`runtime.launch`. ``checked``: the
    positions of the tensor arguments whose alignment a call checks; the caller vouches for the
    others (buffers it allocated itself with aligned rows)."""

    def __init__(self, kernel: Any, grid: Sequence[int], constexprs: dict[str, int], num_warps: int,
                 checked: Sequence[int]):
        self.kernel = kernel
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.constexprs = constexprs
        self.num_warps = num_warps
        self.checked = tuple(checked)
        # (launch function, arguments before the kernel's, device index, constexpr values after them)
        self._direct: tuple | None = None
        self._hooks = runtime.triton.knobs.runtime if runtime.HAS_TRITON else None

    def _generic(self, args: Sequence[Any]) -> Any:
        return runtime.launch(self.kernel, self.grid, args, self.constexprs, self.num_warps)

    def __call__(self, *args: Any) -> None:
        direct = self._direct
        if direct is None:
            self._bind(args, self._generic(args))
            return
        target, middle, device, tail = direct
        hook = self._hooks.launch_enter_hook
        if (hook is not None and getattr(hook, "calls", True)) or self._misaligned(args):
            self._generic(args)
            return
        try:
            target(*self.grid, torch._C._cuda_getCurrentRawStream(device), *middle, *args, *tail)
        except (TypeError, AttributeError, SystemError) as error:  # another launcher convention
            runtime.direct_launches_fail(error)
            self._direct = None
            self._generic(args)

    def _misaligned(self, args: Sequence[Any]) -> bool:
        # a loop over the caller's inputs: any() over all 13 arguments cost 4.4 us (2-core CPU)
        for position in self.checked:
            value = args[position]
            if value is not None and value.data_ptr() & 15:
                return True
        return False

    def _bind(self, args: Sequence[Any], compiled: Any) -> None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not runtime._DIRECT["on"] or compiled is None or not hasattr(compiled, "run") or not tensors or not tensors[0].is_cuda:
            return  # the interpreter, or a launch Triton's JIT had to make: next call tries again
        if any(t.data_ptr() & 15 for t in tensors):
            return  # the first binary assumed nothing of alignment: bind an aligned call's
        bare = runtime.bare_launcher(compiled)
        if bare is not None:  # Triton's C launch function itself: see runtime.bare_launcher
            target, cooperative, pdl = bare
            middle: tuple = (compiled.function, cooperative, pdl, None, None, compiled.packed_metadata, None, None, None)
        else:
            target, middle = compiled.run, (compiled.function, compiled.packed_metadata, None, None, None)
        self._direct = (target, middle, tensors[0].device.index, tuple(self.constexprs.values()))
