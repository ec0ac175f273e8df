"""The ``autotune`` option: benchmark a few block configurations of a kernel once, keep the best.

The choice is keyed by the kernel's source hash, the device name and the power-of-two buckets of
its sizes, and persisted as JSON under ``<cache_dir>/autotune/`` so later processes reuse it.
Benchmarking uses ``triton.testing.do_bench`` and runs only on CUDA; elsewhere the heuristic of
:mod:`ait_dynamo.kernels.runtime` stands.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from typing import Any, Callable, Sequence

import torch

from ait_dynamo import faults
from ait_dynamo.cache import load_json, store_json

log = logging.getLogger("ait_dynamo")

_lock = threading.Lock()
_memory: dict[str, list[int]] = {}
state = {"dir": None}  # set by the compile driver from AitConfig.cache_dir when autotune is on


def set_directory(cache_dir: str) -> None:
    state["dir"] = os.path.join(cache_dir, "autotune")


def _bucket(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _path(kernel_hash: str) -> str | None:
    return os.path.join(state["dir"], f"{kernel_hash}.json") if state["dir"] else None


def _load(kernel_hash: str) -> dict[str, list[int]]:
    return load_json(_path(kernel_hash))


def _store(kernel_hash: str, choices: dict[str, list[int]]) -> None:
    store_json(_path(kernel_hash), choices)


def choose(kernel_hash: str, sizes: Sequence[int], candidates: Sequence[tuple[int, ...]],
           run: Callable[[tuple[int, ...]], Any], device: str | None = None,
           bench: Callable[[Callable[[], Any]], float] | None = None,
           prepare: Callable[[Sequence[tuple[int, ...]]], Any] | None = None) -> tuple[int, ...]:
    """The fastest of ``candidates`` for this kernel, device and size bucket; ``run(config)``
    launches the kernel once with a configuration, ``bench(fn)`` times it (default: do_bench).
    ``prepare(candidates)`` runs first when they are to be measured (compiling them in parallel)."""
    device = device or torch.cuda.get_device_name()
    key = f"{device}|{','.join(str(_bucket(s)) for s in sizes)}"
    memory_key = f"{kernel_hash}|{key}"
    with _lock:
        if memory_key in _memory:
            return tuple(_memory[memory_key])
    stored = _load(kernel_hash)
    if key in stored and list(stored[key]) in [list(c) for c in candidates]:
        choice = tuple(stored[key])
    else:
        if bench is None:
            from triton.testing import do_bench

            def bench(fn: Callable[[], Any]) -> float:
                return float(do_bench(fn, warmup=5, rep=20))

        if prepare is not None:
            prepare(candidates)
        timings = []
        out_of_memory: BaseException | None = None
        for config in candidates:
            try:
                if faults.active("autotune_oom"):
                    raise torch.cuda.OutOfMemoryError("ait_dynamo: injected out-of-memory while autotuning")
                timings.append((bench(lambda c=config: run(c)), config))
            except torch.cuda.OutOfMemoryError as error:
                # the benchmark's own buffers and a larger config may not fit beside the model:
                # tuning gives way, the kernel still runs
                out_of_memory = error
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception as error:  # noqa: BLE001 - a config that does not compile is skipped
                log.debug("autotune: %s failed for %s: %s", config, kernel_hash[:12], error)
        if not timings:
            choice = tuple(candidates[0])
        else:
            choice = min(timings)[1]
        log.info("autotune %s %s: %s (of %d; ms %s)", kernel_hash[:12], key, choice, len(timings),
                 " ".join(f"{c}={t:.4f}" for t, c in sorted(timings)))
        if out_of_memory is not None:
            warnings.warn(
                f"ait_dynamo autotune: out of memory while benchmarking kernel {kernel_hash[:12]} ({out_of_memory}); "
                f"using block configuration {choice} untuned (not saved: a later run tunes it again)",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            stored = _load(kernel_hash)
            stored[key] = list(choice)
            _store(kernel_hash, stored)
    with _lock:
        _memory[memory_key] = list(choice)
    return choice
