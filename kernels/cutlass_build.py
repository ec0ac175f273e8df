"""Building CUTLASS kernels (issue 14): the toolchain, nvcc runs cached by source, ctypes loading.

The road taken is AITemplate's: CUTLASS's C++ templates (``templates/cutlass_gemm.cu.jinja``),
rendered with jinja2 and compiled by ``nvcc`` into a shared library with a C entry point. The other
road, the CUTLASS Python DSL (``nvidia-cutlass-dsl``, CuTe DSL, compiled at run time without
nvcc), was set aside for a measured reason: its CUDA 13 wheel unpacks to 227 MB (a 194 MB MLIR
library) and its wheels weigh 96 MB, against 6.4 MB for ``nvidia-cutlass``'s headers; the GPU
machine this project is measured on takes no downloads and carries at most 64 MiB per call, and
the DSL did not fit even recompressed with xz (66 MB), so its compile time could not be measured
there. The cost of the C++ road is nvcc's time: one SM90 kernel takes 49-64 s on the H200
machine's CPUs and 76-82 s on the 2-core CPU machine (``benchmarks/results/nvidia-h200/cutlass/``,
``benchmarks/results/cpu-xeon/cutlass_host/``),
so candidates compile in parallel, once, and stay on disk; 14 kernels took 56 s of wall time on 16
CPUs.

What is needed, found in this order:

* ``nvcc``: ``$AIT_NVCC``, ``$CUDA_HOME/bin/nvcc``, ``nvcc`` on ``PATH``, ``/usr/local/cuda/bin/nvcc``;
* ``$AIT_NVCC_FLAGS``: more nvcc arguments, split at spaces (a pip-installed nvcc, unlike a CUDA
  toolkit's, needs ``-I`` for the CCCL headers and ``-L`` for cudart);
* CUTLASS's headers: ``$AIT_CUTLASS_DIR`` (a CUTLASS checkout: ``include/cutlass/cutlass.h``), else
  those of the ``nvidia-cutlass`` package (``pip install -e ".[cutlass]"``), found without importing
  it (its Python part imports much that the headers do not need).

Without either, :func:`toolchain` says why, and the GEMM choice skips CUTLASS with one log line.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("ait_dynamo")

# sm_90a: wgmma and setmaxnreg exist only there (a plain sm_90 build rejects them); the -gencode
# form, not -arch=sm_90a, is the one the GPU machine's nvcc 13.0 assembled (device notes, HOPPER.md)
NVCC_FLAGS = ("-O3", "-std=c++17", "-gencode=arch=compute_90a,code=sm_90a", "--expt-relaxed-constexpr",
              "-DNDEBUG", "-Xcompiler=-fPIC", "-shared")
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class Toolchain:
    nvcc: str
    include: str  # the folder holding cutlass/ and cute/


def _nvcc() -> str | None:
    candidates = [os.environ.get("AIT_NVCC")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    return next((c for c in candidates if c and os.path.isfile(c) and os.access(c, os.X_OK)), None)


def _headers() -> str | None:
    roots = []
    if os.environ.get("AIT_CUTLASS_DIR"):
        roots.append(os.path.join(os.environ["AIT_CUTLASS_DIR"], "include"))
    spec = importlib.util.find_spec("cutlass_library")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        roots.append(os.path.join(location, "source", "include"))
    return next((r for r in roots if os.path.isfile(os.path.join(r, "cutlass", "cutlass.h"))), None)


@functools.lru_cache(maxsize=None)
def toolchain() -> Toolchain | str:
    """The toolchain, or a sentence saying what is missing and how to get it."""
    nvcc = _nvcc()
    if nvcc is None:
        return "no nvcc (set CUDA_HOME or AIT_NVCC, or put nvcc on PATH)"
    include = _headers()
    if include is None:
        return 'no CUTLASS headers (pip install -e ".[cutlass]", or set AIT_CUTLASS_DIR to a CUTLASS checkout)'
    return Toolchain(nvcc, include)


_skip_logged = threading.Event()


def available() -> bool:
    """Whether CUTLASS kernels can be built here; logs why not, once per process."""
    found = toolchain()
    if isinstance(found, Toolchain):
        return True
    if not _skip_logged.is_set():
        _skip_logged.set()
        log.info("ait_dynamo: CUTLASS GEMMs skipped: %s", found)
    return False


def library_path(source: str, cache_dir: str) -> str:
    found = toolchain()
    # the compiler and headers are part of the key: another CUDA or CUTLASS builds another library
    tools = (found.nvcc, found.include) if isinstance(found, Toolchain) else ("", "")
    flags = (*NVCC_FLAGS, os.environ.get("AIT_NVCC_FLAGS", ""), *tools)
    key = hashlib.sha256("\n".join((*flags, source)).encode("utf-8")).hexdigest()
    return os.path.join(cache_dir, "cutlass", key[:2], f"{key}.so")


def build(source: str, cache_dir: str) -> str:
    """The shared library of ``source``: from the cache folder, or compiled by nvcc into it
    (atomically: a concurrent build of the same source by another process is harmless)."""
    path = library_path(source, cache_dir)
    if os.path.isfile(path):
        return path
    found = toolchain()
    if not isinstance(found, Toolchain):
        raise RuntimeError(f"CUTLASS: {found}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as folder:
        cu = os.path.join(folder, "kernel.cu")
        with open(cu, "w", encoding="utf-8") as file:
            file.write(source)
        built = os.path.join(folder, "kernel.so")
        command = [found.nvcc, *NVCC_FLAGS, *os.environ.get("AIT_NVCC_FLAGS", "").split(), f"-I{found.include}",
                   "-o", built, cu]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        if result.returncode != 0:
            errors = result.stderr.strip()
            if len(errors) > 3000:  # the first error is the one that says why; the tail, where it stopped
                errors = f"{errors[:2000]}\n...\n{errors[-1000:]}"
            raise RuntimeError(f"nvcc failed ({result.returncode}): {errors}")
        os.replace(built, path)
        log.info("ait_dynamo: built %s in %.1f s", source.splitlines()[0] if source else path,
                 time.perf_counter() - started)
    return path


# nvcc's peak memory for one SM90 CUTLASS GEMM: 3.9 GB resident (2-core CPU machine, CUTLASS 4.2,
# nvcc 13.0); more builds at once than memory holds would swap or be killed
_BUILD_BYTES = 4 << 30


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def build_all(sources: list[str], cache_dir: str) -> list[str | Exception]:
    """Each source's library path, or the error that stopped its build; the builds run in
    parallel (nvcc is one process per source: one CPU and up to 4 GB of memory each)."""
    memory = _available_memory()
    by_memory = max(1, memory // _BUILD_BYTES) if memory is not None else len(sources)
    workers = max(1, min(len(sources), os.cpu_count() or 1, by_memory))
    from ait_dynamo.kernels.gemm_tuning import progress

    cold = sum(not os.path.isfile(library_path(source, cache_dir)) for source in sources)
    bar = progress(cold, "ait: building CUTLASS kernels", "kernel") if cold else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(build, source, cache_dir) for source in sources]
        if bar is not None:
            for _ in concurrent.futures.as_completed(futures):
                bar.update(1)  # cached ones complete at once: the bar's end is approximate
            bar.close()
        results: list[str | Exception] = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as error:  # noqa: BLE001 - one failed candidate leaves the others
                results.append(error)
        return results


_I64P = ctypes.POINTER(ctypes.c_int64)


@functools.lru_cache(maxsize=None)
def load(path: str) -> ctypes.CDLL:
    """The library at ``path`` with its entry points' signatures set."""
    library = ctypes.CDLL(path)
    library.ait_cutlass_workspace.restype = ctypes.c_int64
    library.ait_cutlass_workspace.argtypes = [ctypes.c_int64] * 4 + [_I64P, _I64P]
    library.ait_cutlass_run.restype = ctypes.c_int
    library.ait_cutlass_run.argtypes = ([ctypes.c_void_p] * 6 + [ctypes.c_int64] * 4 + [_I64P, _I64P]
                                        + [ctypes.c_float, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64,
                                           ctypes.c_void_p])
    return library
