"""The one results writer of every benchmark subcommand: JSON with a provenance header.

    {"schema": 1,
     "environment": {"command": "python -m benchmarks train --out ...", "device_name": ..., "torch": ...,
                     "triton": ..., "python": ..., "git_commit": ..., "git_dirty": ..., "timestamp": ..., ...},
     "results": [{"workload": ..., "batch": ..., "backend": ..., "status": "ok", "median_ms": ..., ...}, ...]}

A record is keyed by (workload, batch, backend); ``status`` is ok, wrong, error or "not run";
``median_ms`` is the time per step. Subcommands add their own fields beside these, and
``python -m benchmarks report`` reads any of their files (and merges several). The file is
rewritten after every record, atomically: a run cut short leaves what it measured, never half a file.

This module imports torch only inside ``provenance``, so ``report`` and ``compare`` stay light.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

SCHEMA = 1
REPO = Path(__file__).resolve().parent.parent

Record = dict[str, Any]
Results = dict[str, Any]  # {"schema", "environment", "results": [Record, ...]}


def case_key(record: Record) -> tuple[str, int | None, str]:
    return record["workload"], record.get("batch"), record["backend"]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance(command: str, device: Any = None, **extra: Any) -> dict[str, Any]:
    """Where and how a result was made: the command line, the device, the versions (torch,
    triton, CUDA, Python, ait_dynamo), the git commit (and whether the tree had changes) and the
    date. ``extra``: the subcommand's own settings (scale, sweep, ...)."""
    import torch

    from ait_dynamo import __version__ as ait_version

    device = torch.device(device) if device is not None else torch.device("cpu")
    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": command,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ait_dynamo": ait_version,
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": None if status is None else bool(status),
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **extra,
    }


def write_json(results: Results, path: str | os.PathLike[str]) -> None:
    """Write atomically: an interrupted run leaves the previous complete file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=1, sort_keys=False)
        file.write("\n")
    os.chmod(temporary, 0o644)  # mkstemp makes it private; results are for sharing
    os.replace(temporary, path)


class Recorder:
    """The records of one run and the file they live in (``path`` None: kept in memory only)."""

    def __init__(self, path: str | os.PathLike[str] | None, environment: dict[str, Any]):
        self.path = None if path is None else Path(path)
        self.environment = environment
        self.records: list[Record] = []

    @property
    def results(self) -> Results:
        return {"schema": SCHEMA, "environment": self.environment, "results": self.records}

    def put(self, records: Iterable[Record]) -> None:
        """Add records, each replacing one of the same (workload, batch, backend), and save."""
        index = {case_key(r): i for i, r in enumerate(self.records)}
        for record in records:
            key = case_key(record)
            if key in index:
                self.records[index[key]] = record
            else:
                index[key] = len(self.records)
                self.records.append(record)
        self.save()

    def save(self) -> None:
        if self.path is not None:
            write_json(self.results, self.path)


def command_line(argv: list[str]) -> str:
    """The command as ``python -m benchmarks <subcommand> ...`` (an alias module path included)."""
    import shlex

    return "python -m benchmarks " + shlex.join(argv) if argv else "python -m benchmarks"
