"""Run-time helpers the generated wrapper modules call: where Triton runs, block sizes, launches.

Block sizes come from a heuristic on the sizes of the call (``pointwise_config`` /
``reduction_config``); with the ``autotune`` option, :mod:`ait_dynamo.kernels.autotune` picks among
a few configurations once per kernel and device and remembers the choice on disk.
"""

from __future__ import annotations

import logging
import os
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ait_dynamo.faults import fail_launch as injected_launch_failure  # noqa: F401 - generated code calls it

try:
    import triton

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton ships with torch on Linux
    triton = None  # type: ignore[assignment]
    HAS_TRITON = False

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_runs_on(device_type: str) -> bool:
    """CUDA tensors run generated Triton kernels; CPU tensors only under Triton's interpreter."""
    if not HAS_TRITON:
        return False
    if device_type == "cuda":
        return not INTERPRETING and torch.cuda.is_available()
    if device_type == "cpu":
        return INTERPRETING
    return False


BROKEN: set[Any] = set()  # kernels that failed to compile or launch: their groups run through ATen


def mark_broken(kernel: Any, error: BaseException) -> None:
    """Remember a kernel that failed (a Triton compile error, a launch error) and warn once.
    Running out of memory is not the kernel's fault: that error propagates."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        raise error
    if kernel in BROKEN:
        return
    BROKEN.add(kernel)
    name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", "kernel")
    warnings.warn(
        f"ait_dynamo: generated kernel {name} failed ({type(error).__name__}: {_cause(error)}); "
        "its ops run through ATen from now on",
        RuntimeWarning,
        stacklevel=3,
    )


def _cause(error: BaseException, limit: int = 300) -> str:
    """The error's message, shortened from the middle: Triton's compile errors begin with the
    kernel's source and end with the cause."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-(2 * limit) // 3:]}"


def next_seed() -> int:
    """One Philox seed per random node per call, from torch's default CPU generator (see the
    seed/offset scheme in ``kernels/op_table.py``)."""
    return int(torch.randint(0, 2**31 - 1, ()).item())


# -- launching ------------------------------------------------------------------------------------
#
# ``kernel[grid](...)`` re-derives the specialization of every argument and looks the compiled
# kernel up on each call: under cProfile on the H200 host, 53 us per launch in the encoder block's
# training step and 83 us in the tutorial function's, of which the C launcher took 17-22 us
# (benchmarks/results/nvidia-h200/memory_and_launch/host_profile/*_jit_launch.txt). After the
# first launch of a configuration, ``launch`` calls the compiled kernel's launcher directly, keyed by what decides Triton's specialization: each pointer's
# 16-byte alignment and each int's value (Triton looks at equality to 1, divisibility by 16 and
# the need for 64 bits; equal values agree on all three). Any surprise from the launcher
# (another Triton's calling convention) turns the direct path off. Measured gain so far: none
# beyond the noise. The encoder step enqueued in 4.25 ms against 4.39 ms through the JIT, in two
# runs on different machines (host_profile/encoder_block_ait_direct_launch.txt), and under cProfile
# ``launch`` costs about what the JIT path did.

_DIRECT = {"on": not INTERPRETING}
_COMPILED: dict[tuple, Any] = {}
_COMPILED_MAX = 4096


def _specialization(args: Sequence[Any]) -> tuple:
    """Each int as itself (equal ints specialize alike); each tensor's dtype and 16-byte alignment.
    The dtype matters: one kernel object can serve inputs of several dtypes (a module's source
    names no input dtype where no cast is needed, and identical sources share one module), and
    the binary compiled for bf16 pointers read fp16 data as bf16 (issue #10)."""
    return tuple((value.dtype, value.data_ptr() % 16) if isinstance(value, torch.Tensor) else value for value in args)


def raw_stream(device_index: int) -> int:
    """The current CUDA stream's handle, without building a ``torch.cuda.Stream`` object."""
    return torch._C._cuda_getCurrentRawStream(device_index)


def launch(kernel: Any, grid: tuple[int, ...], args: Sequence[Any], constexprs: dict[str, int], num_warps: int,
           num_stages: int | None = None) -> Any:
    """``kernel[grid](*args, **constexprs, num_warps=num_warps)``, through the compiled kernel's
    launcher once that configuration has been compiled. ``constexprs`` follow ``args`` in the
    kernel's signature, in order (the generated kernels declare them last). Returns the compiled
    kernel where the direct path can call it (for :class:`~ait_dynamo.kernels.launch_site.LaunchSite`
    to bind), else ``None``. ``num_stages``: the software pipeline's depth (GEMM templates)."""
    hooks = triton.knobs.runtime
    enter_hook = hooks.launch_enter_hook
    options: dict[str, int] = {"num_warps": num_warps}
    if num_stages is not None:
        options["num_stages"] = num_stages
    if not _DIRECT["on"] or (enter_hook is not None and getattr(enter_hook, "calls", True)):
        # launch hooks (a profiler) want Triton's launch metadata: the JIT computes it
        kernel[grid](*args, **constexprs, **options)
        return None
    device = args[0].device.index if isinstance(args[0], torch.Tensor) else None
    key = (kernel, tuple(constexprs.values()), num_warps, num_stages, device, _specialization(args))
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = kernel[grid](*args, **constexprs, **options)
        if compiled is not None and hasattr(compiled, "run") and device is not None:
            if len(_COMPILED) >= _COMPILED_MAX:  # ints are part of the key: dynamic sizes add entries
                _COMPILED.clear()
            _COMPILED[key] = compiled
            return compiled
        return None
    grid = tuple(grid) + (1,) * (3 - len(grid))
    try:
        compiled.run(grid[0], grid[1], grid[2], raw_stream(device), compiled.function, compiled.packed_metadata,
                     None, enter_hook, hooks.launch_exit_hook, *args, *constexprs.values())
    except (TypeError, AttributeError) as error:  # another launcher convention: use Triton's own path
        direct_launches_fail(error)
        kernel[grid](*args, **constexprs, **options)
        return None
    return compiled


def direct_launches_fail(error: BaseException) -> None:
    """The compiled launcher did not take our arguments (another Triton's calling convention):
    every launch goes through Triton's JIT from now on, with one warning."""
    if _DIRECT["on"]:
        _DIRECT["on"] = False
        warnings.warn(f"ait_dynamo: direct Triton launches turned off ({error}); launching through the JIT",
                      RuntimeWarning, stacklevel=3)


# Triton's compiled launcher object wraps its C ``launch`` function in a Python ``__call__`` that
# allocates scratch memory (none for our kernels) and adds the cooperative-grid and PDL flags.
# Inside GPT-2's training step that wrapper cost 10 ms a step: the step enqueued in 16.2 ms with
# the C function called directly against 26.1 ms through the wrapper, Inductor 20.7 (H200, median
# of 5 interleaved rounds: benchmarks/results/nvidia-h200/host_calls/launch_variants.py). A repeated
# micro-benchmark launch showed only 4.4 against 5.1 us (host_calls.py): the wrapper costs far more
# inside the model, for reasons not isolated. The C function's arguments are read
# from Triton 3.6's source (backends/nvidia/driver.py: grid, stream, function, cooperative, pdl,
# global scratch, profile scratch, packed metadata, launch metadata, enter hook, exit hook, then the
# kernel's own), so it is called only under that Triton; other versions keep ``compiled.run``.
BARE_LAUNCHER_VERSIONS = ("3.6.",)


def bare_launcher(compiled: Any, version: str | None = None) -> tuple[Any, Any, Any] | None:
    """``(launch, cooperative, pdl)``: the C launch function under ``compiled.run`` and the flags
    its wrapper adds, where calling it directly skips nothing: a Triton whose convention we know,
    no scratch memory to allocate, no tensor descriptors (those wrap ``launch`` in Python). Else
    ``None``."""
    version = triton.__version__ if version is None and HAS_TRITON else version
    if not version or not version.startswith(BARE_LAUNCHER_VERSIONS):
        return None
    wrapper = getattr(compiled, "run", None)
    launch = getattr(wrapper, "launch", None)
    if launch is None or isinstance(launch, types.FunctionType):
        return None
    if getattr(wrapper, "global_scratch_size", 1) or getattr(wrapper, "profile_scratch_size", 1):
        return None
    cooperative, pdl = getattr(wrapper, "launch_cooperative_grid", None), getattr(wrapper, "launch_pdl", None)
    if cooperative is None or pdl is None:
        return None
    return launch, cooperative, pdl


# The wrapper of a graph on one CUDA device allocates its kernels' outputs through
# ``_empty_strided_cuda(size, stride, dtype)`` (what Inductor's wrappers call), which allocates on
# the current device: 0.97 against 1.87 us for ``torch.empty_strided(..., device=...)`` in a
# micro-benchmark, and in GPT-2's training wrapper an allocation line cost ait 6.4 us against
# Inductor's 2.8 (H200, benchmarks/wrapper_lines.py). Each call checks the current device once and
# allocates through ``torch.empty_strided`` on the graph's device where another one is current.
current_cuda_device: Callable[[], int] = getattr(torch._C, "_cuda_getDevice", lambda: -1)


def cuda_allocators(index: int) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """``(allocate, allocate_elsewhere)``, each ``(size, stride, dtype) -> tensor`` on ``cuda:index``:
    the first only while that device is current, the second whatever device is."""
    device = torch.device("cuda", index)

    def on_device(size: Sequence[int], stride: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty_strided(size, stride, dtype=dtype, device=device)

    guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
    return getattr(guards, "_empty_strided_cuda", None) or on_device, on_device


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# The interpreter's largest XBLOCK. numpy runs one program at a time, so few large programs are
# fastest; but a hazard between programs (one program overwriting what another still reads) only
# shows with several: the test suite lowers it to 64 (tests/conftest.py; AIT_INTERPRET_MAX_XBLOCK).
INTERPRETER_MAX_XBLOCK = int(os.environ.get("AIT_INTERPRET_MAX_XBLOCK", str(1 << 16)))


def pointwise_config(xnumel: int) -> tuple[int, int]:
    """(XBLOCK, num_warps)."""
    if INTERPRETING:
        return min(_next_power_of_2(xnumel), INTERPRETER_MAX_XBLOCK), 1
    if xnumel >= 1 << 20:
        return 1024, 4
    block = max(128, min(1024, _next_power_of_2(xnumel)))
    return block, max(1, min(4, block // 256))


def reduction_config(xnumel: int, rnumel: int, persistent: bool, column: bool = False) -> tuple[int, int, int]:
    """(XBLOCK, RBLOCK, num_warps)."""
    if column and not persistent:
        if INTERPRETING:
            return max(1, min(_next_power_of_2(xnumel), 256, INTERPRETER_MAX_XBLOCK)), 64, 1
        xblock = 64 if xnumel >= 64 * 132 else max(16, min(64, _next_power_of_2(xnumel)))
        return xblock, 64, 8
    if persistent:
        rblock = _next_power_of_2(max(rnumel, 1))
        if INTERPRETING:
            return max(1, min(_next_power_of_2(xnumel), (1 << 16) // rblock, INTERPRETER_MAX_XBLOCK)), rblock, 1
        xblock = max(1, min(_next_power_of_2(xnumel), 2048 // rblock if rblock <= 2048 else 1))
        elements = xblock * rblock
        warps = 2 if elements <= 512 else 4 if elements <= 2048 else 8 if elements <= 4096 else 16
        return xblock, rblock, warps
    if INTERPRETING:
        return max(1, min(_next_power_of_2(xnumel), 64, INTERPRETER_MAX_XBLOCK)), 1024, 1
    return 1, 2048, 8


def _tuning(tune: str | None, tensors: Sequence[Any]) -> bool:
    return bool(tune) and not INTERPRETING and tensors[0].is_cuda


@dataclass(frozen=True)
class Launched:
    """What one launch ran: a launch site binds it for its later calls."""

    grid: tuple[int, int, int]
    constexprs: tuple[int, ...]
    num_warps: int
    compiled: Any  # the compiled kernel, where the direct path can call it; else None


def _launched(grid: tuple[int, ...], constexprs: dict[str, int], warps: int, compiled: Any) -> Launched:
    return Launched(tuple(grid) + (1,) * (3 - len(grid)), tuple(constexprs.values()), warps, compiled)  # type: ignore[arg-type]


def launch_pointwise(kernel: Any, tensors: Sequence[Any], ints: Sequence[int], xnumel: int,
                     tune: str | None = None) -> Launched | None:
    """Launch a pointwise kernel; ``tune`` (the kernel's source hash) turns on autotuning."""
    if xnumel == 0:
        return None

    def run(config: tuple[int, ...]) -> Launched:
        block, warps = config
        grid, constexprs = (triton.cdiv(xnumel, block),), {"XBLOCK": block}
        return _launched(grid, constexprs, warps, launch(kernel, grid, (*tensors, *ints, xnumel), constexprs, warps))

    config = pointwise_config(xnumel)
    if _tuning(tune, tensors):
        from ait_dynamo.kernels import autotune

        candidates = [config] + [c for c in ((512, 4), (1024, 4), (2048, 8), (4096, 8)) if c != config]
        args = (*tensors, *ints, xnumel)
        config = autotune.choose(tune, (xnumel,), candidates, run, prepare=lambda configs: warm_configs(
            kernel, args, configs, lambda c: {"XBLOCK": c[0], "num_warps": c[1]}))
    return run(config)


def reduction_split(xnumel: int, rnumel: int, column: bool = True) -> tuple[int, int]:
    """(elements per split, splits) for a reduction that splits its rows over programs along grid
    axis 1: enough programs to fill the GPU. ``column``: a column reduction (few long columns,
    ``kernels/column_reduction.py``); else few long rows of a looped row reduction (a sum or an
    ``any`` of a whole tensor: one program walked T5's 524288-element ``isinf(x).any()``, 1 MB,
    in 61 us on the H200)."""
    if rnumel <= 0:
        return 0, 1
    if not column:  # one program a row on a GPU (reduction_config)
        splits = min(1024 // max(1, xnumel), rnumel // _ROW_SPLIT_ELEMENTS)
        if splits < _ROW_SPLIT_LEAST:
            splits = 1
        elif INTERPRETING:  # where a GPU splits, a few splits (CI exercises the partial results)
            splits = 3
    elif INTERPRETING:  # a few splits, so that CI exercises the partial sums
        splits = max(1, min(3, rnumel // 4))
    else:
        xblock = reduction_config(xnumel, rnumel, False, True)[0]
        programs = max(1, -(-xnumel // xblock))
        # at least 4 RBLOCK chunks a split: at 512, EfficientNet-B0's squeeze-excitation poolings
        # over 28x28 (784 rows, 4608-7680 columns: 72-120 programs) would get one split each
        splits = max(1, min(1024 // programs, rnumel // 256))
    per_split = -(-rnumel // splits)
    if not INTERPRETING:  # whole RBLOCK chunks
        chunk = 64 if column else reduction_config(xnumel, rnumel, False)[1]
        per_split = -(-per_split // chunk) * chunk
    return per_split, -(-rnumel // per_split)


# A row split costs a launch of the finishing kernel (a few us) and pays where the row is long:
# one program walks a 2048-element chunk in ~0.24 us on the H200 (T5's any: 256 chunks, 61 us), so
# splits of 8192 elements (4 chunks, ~1 us) and at least 4 of them (rows of 32768 and longer).
_ROW_SPLIT_ELEMENTS = 8192
_ROW_SPLIT_LEAST = 4


def launch_reduction(kernel: Any, tensors: Sequence[Any], ints: Sequence[int], xnumel: int, rnumel: int,
                     persistent: bool, column: bool = False, tune: str | None = None, splits: int = 1) -> Launched | None:
    """Launch a reduction kernel; a persistent kernel needs RBLOCK >= rnumel (every candidate has it).
    ``splits`` > 1 (split reductions: ``reduction_split``) runs that many programs along grid axis 1."""
    if xnumel == 0:
        return None

    def run(config: tuple[int, ...]) -> Launched:
        xblock, rblock, warps = config
        grid, constexprs = (triton.cdiv(xnumel, xblock), splits), {"XBLOCK": xblock, "RBLOCK": rblock}
        return _launched(grid, constexprs, warps,
                         launch(kernel, grid, (*tensors, *ints, xnumel, rnumel), constexprs, warps))

    config = reduction_config(xnumel, rnumel, persistent, column)
    if _tuning(tune, tensors):
        from ait_dynamo.kernels import autotune

        xblock, rblock, warps = config
        if persistent:
            variants = [(max(1, xblock // 2), rblock, warps), (xblock * 2, rblock, warps),
                        (xblock, rblock, max(1, warps // 2)), (xblock, rblock, min(32, warps * 2))]
        elif column:
            variants = [(16, 64, 4), (32, 64, 8), (64, 32, 8), (128, 16, 8), (64, 64, 8)]
        else:
            variants = [(1, 1024, 4), (1, 2048, 8), (1, 4096, 8), (2, 1024, 8)]
        candidates = [config] + [v for v in variants if v != config and v[0] * v[1] <= 32768]
        args = (*tensors, *ints, xnumel, rnumel)
        config = autotune.choose(tune, (xnumel, rnumel), candidates, run, prepare=lambda configs: warm_configs(
            kernel, args, configs, lambda c: {"XBLOCK": c[0], "RBLOCK": c[1], "num_warps": c[2]}))
    return run(config)



def launch_gemm(kernel: Any, tensors: Sequence[Any], ints: Sequence[int], problem: tuple[int, int, int, int],
                dtype: torch.dtype, tune: str | None = None) -> Launched | None:
    """Launch a GEMM template kernel (``templates/gemm.py.jinja``) over ``problem`` = (batch, M, N,
    K): one program per BLOCK_M x BLOCK_N tile along grid axis 0, the batch along axis 1. ``tune``
    (the kernel's source hash) measures the configurations of ``kernels/gemm_configs.py`` once."""
    from ait_dynamo.kernels import gemm_configs

    batch, m, n, k = problem
    if batch == 0 or m == 0 or n == 0:
        return None
    upcast = INTERPRETING and dtype == torch.bfloat16  # the interpreter's bf16 tl.dot is wrong
    # a kernel generated with the persistent TMA path (templates/gemm.py.jinja) declares PERSISTENT
    has_persistent = "PERSISTENT" in getattr(kernel, "arg_names", ())

    def settings(config: tuple[int, ...], aligned: bool = True) -> tuple[tuple[int, int], dict[str, int]]:
        """(grid, constexprs) of a configuration; the persistent path only where every tensor
        starts 16-byte aligned (a tensor descriptor's base must), else the same tiles classically."""
        tiles = triton.cdiv(m, config[0]) * triton.cdiv(n, config[1])
        if has_persistent and gemm_configs.is_persistent(config) and aligned:
            programs = min(tiles, multiprocessors(tensors))
            return (programs, batch), gemm_configs.constexprs(config, k, upcast, programs)
        classic = tuple(config[:6])
        return (tiles, batch), gemm_configs.constexprs(classic, k, upcast, 1 if has_persistent else None)

    def run(config: tuple[int, ...]) -> Launched:
        aligned = not has_persistent or all(t.data_ptr() % 16 == 0 for t in tensors if isinstance(t, torch.Tensor))
        grid, values = settings(config, aligned)
        if values.get("PERSISTENT"):
            ensure_allocator()
        warps, stages = config[4], config[5]
        return _launched(grid, values, warps, launch(kernel, grid, (*tensors, *ints), values, warps, stages))

    if INTERPRETING:
        return run(gemm_configs.interpreter_config(m, n, k))
    config: tuple[int, ...] = gemm_configs.heuristic(batch, m, n, k, dtype)
    if _tuning(tune, tensors):
        from ait_dynamo.kernels import autotune

        def compile_all(configs: Sequence[tuple[int, ...]]) -> None:
            if any(gemm_configs.is_persistent(c) for c in configs):
                ensure_allocator()
            warm_gemm_configs(kernel, (*tensors, *ints), configs, k, upcast, constexprs=lambda c: settings(c)[1])

        config = autotune.choose(tune, (batch, m, n, k),
                                 gemm_configs.candidates(batch, m, n, k, dtype, persistent=has_persistent and batch == 1),
                                 run, prepare=compile_all)
    return run(config)


_multiprocessors: dict[int, int] = {}


def multiprocessors(tensors: Sequence[Any]) -> int:
    """The multiprocessor count of the tensors' CUDA device (the persistent grid's size); 4 off
    CUDA (Triton's interpreter), so that the CPU tests still have programs that take several tiles."""
    device = next((t.device for t in tensors if isinstance(t, torch.Tensor)), None)
    index = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
    if index not in _multiprocessors:
        available = torch.cuda.is_available() and device is not None and device.type == "cuda"
        _multiprocessors[index] = torch.cuda.get_device_properties(index).multi_processor_count if available else 4
    return _multiprocessors[index]


def ensure_allocator() -> None:
    """Tensor descriptors made in a kernel (``tl.make_tensor_descriptor``) need global scratch
    memory, which Triton asks of the allocator set with ``triton.set_allocator``: where none is
    set in this context, one that takes it from PyTorch's caching allocator."""
    try:
        from triton.runtime import _allocation
    except ImportError:  # pragma: no cover - a Triton without descriptors never takes this path
        return
    current = _allocation._allocator.get() if hasattr(_allocation._allocator, "get") else None
    if current is None or isinstance(current, _allocation.NullAllocator):
        def allocate(size: int, alignment: int, stream: Any) -> torch.Tensor:
            device = torch.cuda.current_device() if torch.cuda.is_available() and not INTERPRETING else "cpu"
            return torch.empty(size, dtype=torch.int8, device=device)

        triton.set_allocator(allocate)


def warm_gemm_configs(kernel: Any, args: Sequence[Any], configs: Sequence[tuple[int, ...]], k: int, upcast: bool,
                      workers: int = 8, constexprs: Callable[[tuple[int, ...]], dict[str, int]] | None = None) -> None:
    """Compile a GEMM kernel's candidate configurations in parallel (:func:`warm_configs`)."""
    from ait_dynamo.kernels import gemm_configs

    def options(config: tuple[int, ...]) -> dict[str, int]:
        values = constexprs(config) if constexprs is not None else gemm_configs.constexprs(config, k, upcast)
        return {**values, "num_warps": config[4], "num_stages": config[5]}

    warm_configs(kernel, args, configs, options, workers)


def warm_configs(kernel: Any, args: Sequence[Any], configs: Sequence[tuple[int, ...]],
                 options: Callable[[tuple[int, ...]], dict[str, int]], workers: int = 8) -> None:
    """Compile a kernel's candidate configurations (GEMM and depthwise templates, pointwise and
    reduction kernels) in parallel before they are timed one by one (``JITFunction.warmup`` with
    the launch's own arguments: the same specialisation); ``options(config)``: its constexprs,
    ``num_warps`` and (where set) ``num_stages``. ptxas runs as a subprocess, so threads overlap;
    this is most of a cold autotuning compile. Compiled in turn, EfficientNet-B0's first call
    with ``autotune`` on the H200 (9c17fe4) spent about 55 s tuning 140 pointwise and reduction
    kernels. A configuration that fails here fails again, and is skipped, when it is timed."""
    from concurrent.futures import ThreadPoolExecutor

    warmup = getattr(kernel, "warmup", None)
    if warmup is None or len(configs) < 2:
        return

    def compile_one(config: tuple[int, ...]) -> None:
        warmup(*args, grid=(1,), **options(config))

    with ThreadPoolExecutor(max_workers=min(workers, len(configs)), thread_name_prefix="ait-template-compile") as pool:
        for future in [pool.submit(compile_one, c) for c in configs]:
            try:
                future.result()
            except Exception as error:  # noqa: BLE001 - timed (and skipped) later
                logging.getLogger("ait_dynamo").debug("precompiling a template configuration failed: %s", _cause(error))
