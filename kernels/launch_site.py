"""One kernel launch of a generated wrapper, bound once: the steady state is one call.

The wrapper's body calls ``site.launch(*tensors, *ints)`` inside a ``try`` (free in Python 3.11+
until something raises) and, in its ``except``, ``site.recover(error, *inputs)``, which runs the
group through ATen. What does not change from call to call is decided on the first call and kept:

* the configuration (block sizes, or the autotuned choice), the grid, the constexprs;
* on CUDA with static sizes, the compiled kernel itself: later calls go straight to its C
  launch function (:func:`runtime.bare_launcher`: under Triton 3.6, 10 ms less per GPT-2
  training step than its Python wrapper), else to ``compiled.run(grid, stream, function,
  metadata, ..., *args)``, with no lookup of the kernel's specialization. Only the arguments that
  can change what Triton specializes on are looked at per call: tensors the wrapper did not just allocate (graph inputs, views, reused
  buffers: a pointer's 16-byte alignment) and random seeds (an int's ``== 1`` and divisibility by
  16). Another value there goes through :func:`runtime.launch`, which compiles or finds the
  matching kernel;
* a kernel that failed (a Triton compile error, a launch error, or the numerics guard's verdict):
  ``recover`` warns once (:func:`runtime.mark_broken`) and rebinds ``launch`` to raise at once,
  so the group runs through ATen from then on without trying the kernel again.

Sizes that are symbolic (dynamic shapes) pass ``xnumel`` (reductions: ``xnumel, rnumel, splits``)
as the last arguments of each call, and go through :func:`runtime.launch_pointwise` / :func:`runtime.launch_reduction`
every time.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ait_dynamo.kernels import depthwise, runtime
from ait_dynamo.kernels.layout_guard import laid_out


class KernelRetired(Exception):
    """Raised by a retired site's ``launch``: the wrapper's ``except`` runs ATen instead."""


_RETIRED = KernelRetired()


def _retired(*args: Any) -> None:
    raise _RETIRED


def _specialization_key(args: Sequence[Any], tensors: Sequence[int], seeds: Sequence[int]) -> tuple:
    # what Triton specializes on among a call's checked tensors and seeds: computed when a site
    # binds, and per launch for the seeds only (``direct`` tests the tensors in a loop)
    key: list[Any] = [args[i].data_ptr() & 15 for i in tensors]
    if seeds:
        key += [(args[i] == 1, args[i] % 16 == 0) for i in seeds]
    return tuple(key)


class LaunchSite:
    """See the module doc. ``tensors``: how many leading arguments are tensors; ``checked``:
    positions of tensors whose address can differ in alignment from call to call; ``seeds``:
    positions of per-call random seeds; ``xnumel``/``rnumel``/``splits``: static sizes, or
    ``xnumel=None`` when each call passes them last; ``layouts``: each output's traced (sizes,
    strides), which ATen's results take when the group falls back (static layouts only)."""

    def __init__(self, kernel: Any, fallback: Callable[..., tuple], name: str, kind: str, tensors: int, *,
                 xnumel: int | None = None, rnumel: int = 1, persistent: bool = False, column: bool = False,
                 splits: int = 1, tune: str | None = None, checked: Sequence[int] = (), seeds: Sequence[int] = (),
                 gemm: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
                 layouts: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None):
        if kind not in ("pointwise", "reduction", "gemm", "conv"):
            raise ValueError(f"LaunchSite: kind must be 'pointwise', 'reduction', 'gemm' or 'conv', got {kind!r}")
        if kind in ("gemm", "conv") and (gemm is None or dtype is None):
            raise ValueError(f"LaunchSite: a {kind} site needs its problem (a GEMM's (batch, M, N, K), "
                             "a convolution's depthwise.problem) and operand dtype")
        self.kernel = kernel
        self.fallback = fallback
        self.name = name
        self.kind = kind
        self.tensors = tensors
        self.xnumel = xnumel
        self.rnumel = rnumel
        self.persistent = persistent
        self.column = column
        self.splits = splits
        self.tune = tune
        self.checked = tuple(checked)
        self.seeds = tuple(seeds)
        self.gemm = gemm
        self.dtype = dtype
        self.layouts = layouts
        self.direct = False  # whether later calls go straight to the compiled launcher
        self.bound: runtime.Launched | None = None
        self.launch: Callable[..., None] = self._first

    # -- the calls ------------------------------------------------------------------------------

    def _generic(self, *args: Any) -> runtime.Launched | None:
        tensors, ints = args[:self.tensors], args[self.tensors:]
        if self.kind == "gemm":  # static sizes, in the problem and the kernel's source
            return runtime.launch_gemm(self.kernel, tensors, ints, self.gemm, self.dtype, self.tune)  # type: ignore[arg-type]
        if self.kind == "conv":  # a depthwise convolution: its shape (depthwise.problem)
            return depthwise.launch(self.kernel, tensors, ints, self.gemm, self.tune)  # type: ignore[arg-type]
        if self.xnumel is None:  # dynamic sizes: the call passes them last
            if self.kind == "pointwise":
                return runtime.launch_pointwise(self.kernel, tensors, ints[:-1], ints[-1], self.tune)
            return runtime.launch_reduction(self.kernel, tensors, ints[:-3], ints[-3], ints[-2], self.persistent,
                                            self.column, self.tune, ints[-1])
        if self.kind == "pointwise":
            return runtime.launch_pointwise(self.kernel, tensors, ints, self.xnumel, self.tune)
        return runtime.launch_reduction(self.kernel, tensors, ints, self.xnumel, self.rnumel, self.persistent,
                                        self.column, self.tune, self.splits)

    def _first(self, *args: Any) -> None:
        if self.kernel in runtime.BROKEN:  # failed at another site, or judged wrong: do not try again
            self.launch = _retired
            raise _RETIRED
        launched = self._generic(*args)
        if self.xnumel is None or launched is None or launched.compiled is None or not hasattr(launched.compiled, "run"):
            self.launch = self._generic  # dynamic sizes, the interpreter, or nothing to launch
            return
        device = next(a for a in args[:self.tensors] if isinstance(a, torch.Tensor)).device
        if device.type != "cuda" or not runtime._DIRECT["on"]:
            self.launch = self._generic
            return
        self.launch = self._bind(launched, device.index, _specialization_key(args, self.checked, self.seeds))

    def _bind(self, launched: runtime.Launched, device: int, key: tuple) -> Callable[..., None]:
        compiled = launched.compiled
        run, function, metadata = compiled.run, compiled.function, compiled.packed_metadata
        grid_x, grid_y, grid_z = launched.grid
        numels = {"pointwise": (self.xnumel,), "reduction": (self.xnumel, self.rnumel), "gemm": (), "conv": ()}[self.kind]
        tail = numels + launched.constexprs
        stream = torch._C._cuda_getCurrentRawStream
        hooks = runtime.triton.knobs.runtime
        checked, seeds, generic = self.checked, self.seeds, self._generic
        bare = runtime.bare_launcher(compiled)
        if bare is not None:  # Triton's C launch function itself: see runtime.bare_launcher
            target, cooperative, pdl = bare
            middle: tuple = (function, cooperative, pdl, None, None, metadata, None, None, None)
        else:
            target, middle = run, (function, metadata, None, None, None)

        # the first call's alignment of each checked tensor, tested in a loop in ``direct`` rather
        # than by a call of _specialization_key per launch: GPT-2's training step enqueued in 26.1 ms
        # with that call and 24.7 ms with no check at all (within the rounds' spread; 438 of its 511
        # sites check a tensor: launch_variants_gpt2.log). The loop itself was not timed in a model.
        alignments = tuple(zip(checked, key[:len(checked)]))
        seed_key = key[len(checked):]

        def direct(*args: Any) -> None:
            # a profiler's launch hooks want Triton's launch metadata; a new specialization wants
            # its own binary: both through Triton's JIT
            enter_hook = hooks.launch_enter_hook
            if enter_hook is not None and getattr(enter_hook, "calls", True):
                generic(*args)
                return
            for position, alignment in alignments:
                if args[position].data_ptr() & 15 != alignment:
                    generic(*args)
                    return
            if seeds and _specialization_key(args, (), seeds) != seed_key:
                generic(*args)
                return
            try:
                target(grid_x, grid_y, grid_z, stream(device), *middle, *args, *tail)
            except (TypeError, AttributeError, SystemError) as error:  # another launcher convention
                runtime.direct_launches_fail(error)
                self.launch = generic
                generic(*args)

        self.direct = True
        self.bound = launched  # what the direct path launches (for measurements and debugging)
        return direct

    # -- failure --------------------------------------------------------------------------------

    def retire(self) -> None:
        """Run the group through ATen from now on (the numerics guard's verdict)."""
        runtime.BROKEN.add(self.kernel)
        self.launch = _retired

    def recover(self, error: BaseException, *inputs: Any) -> tuple:
        """The group's outputs from ATen after ``launch`` raised; a first failure warns once and
        retires the site. Running out of memory is not the kernel's fault: it propagates."""
        if error is not _RETIRED:
            runtime.mark_broken(self.kernel, error)
            self.launch = _retired
        return self.as_traced(self.fallback(*inputs))

    def as_traced(self, results: Sequence[Any]) -> tuple:
        """ATen's results for the group laid out as the kernel's outputs are: the wrapper writes
        views of kernel outputs with their traced layout (kernels/views.py)."""
        if self.layouts is None:
            return tuple(results)
        return tuple(laid_out(value, size, stride) for value, (size, stride) in zip(results, self.layouts))

    def __repr__(self) -> str:
        state = "retired" if self.launch is _retired else "direct" if self.direct else "bound" if self.launch != self._first else "new"
        return f"LaunchSite({self.name}, {self.kind}, {state})"
