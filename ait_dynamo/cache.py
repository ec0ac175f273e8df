"""On-disk cache of generated modules, keyed by the SHA-256 of their source.

Generated source is deterministic (same graph and config → byte-identical text), so the hash of
the text is a stable key across processes. A file is trusted only if its content still hashes to
its name: a corrupt or truncated file is rewritten, never executed.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import logging
import os
import tempfile
import threading
import types
import warnings
from typing import Any

log = logging.getLogger("ait_dynamo")

_loaded: dict[str, types.ModuleType] = {}
_lock = threading.Lock()


def source_key(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def module_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, key[:2], f"{key}.py")


def _read_valid(path: str, key: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (FileNotFoundError, NotADirectoryError):  # not cached (or no cache folder to look in)
        return None
    except (OSError, UnicodeDecodeError) as error:
        _warn(f"ait_dynamo cache: cannot read {path} ({type(error).__name__}: {error}); regenerating it")
        return None
    if source_key(text) != key:
        _warn(f"ait_dynamo cache: {path} does not match its hash ({len(text)} characters: corrupt or "
              "truncated); regenerating it")
        return None
    return text


_warned: set[str] = set()


def _warn(message: str, once_key: str | None = None) -> None:
    """One warning per cause: a broken cache must not stop the program, nor flood it."""
    if once_key is not None:
        with _lock:
            if once_key in _warned:
                log.debug("%s", message)
                return
            _warned.add(once_key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def _replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the whole new one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def device_choices_path(cache_dir: str, kind: str, device: str) -> str:
    """Where measured choices of one ``kind`` (``gemm_padding``, ``gemm_choice``) are kept for
    one device name."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in device)
    return os.path.join(cache_dir, kind, f"{safe}.json")


def load_json(path: str | None) -> dict:
    """A small JSON object of measured choices (autotuning, GEMM padding); ``{}`` if absent or bad."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def store_json(path: str | None, data: dict) -> None:
    """Keep measured choices for later processes; a folder that cannot be written costs only a
    new measurement next time."""
    if path is None:
        return
    try:
        _replace_file(path, json.dumps(data, sort_keys=True))
    except OSError as error:
        log.warning("ait_dynamo: cannot write %s (%s)", path, error)


def remember_choice(path: str | None, key: str, choice: Any) -> None:
    """Add one measured choice to the file at ``path``, read again just before: another process
    may have added its own since this one read it."""
    stored = load_json(path)
    stored[key] = choice
    store_json(path, stored)


def _write_atomically(path: str, text: str) -> bool:
    try:
        _replace_file(path, text)
        return True
    except OSError as error:
        _warn(f"ait_dynamo cache: cannot write to {os.path.dirname(os.path.dirname(path))} "
              f"({type(error).__name__}: {error}); compiled graphs are kept in memory only",
              once_key=os.path.dirname(os.path.dirname(path)))
        return False


def load_module(source: str, cache_dir: str) -> tuple[types.ModuleType, bool]:
    """Return the module for ``source`` and whether it came from a cache (memory or disk)."""
    key = source_key(source)
    with _lock:
        module = _loaded.get(key)
    if module is not None:
        return module, True
    path = module_path(cache_dir, key)
    hit = _read_valid(path, key) is not None
    if not hit and not _write_atomically(path, source):
        path = f"<ait_dynamo generated {key[:16]}>"
    module = types.ModuleType(f"ait_dynamo_generated_{key[:16]}")
    module.__file__ = path
    # Triton reads each kernel's source through inspect/linecache: serve it from memory, so a
    # module that could not be written to disk still compiles.
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    exec(compile(source, path, "exec"), module.__dict__)
    with _lock:
        module = _loaded.setdefault(key, module)
    return module, hit


def clear_memory_cache() -> None:
    """Forget modules loaded in this process (the disk cache stays)."""
    with _lock:
        _loaded.clear()
