"""Per-graph debug folder: input graph, graph after each pass, plan, generated module."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("ait_dynamo")


class DebugDir:
    """Writes files under ``<debug_dir>/<graph name>/``; does nothing when ``debug_dir`` is None."""

    def __init__(self, debug_dir: str | None, graph_name: str):
        self.path = os.path.join(debug_dir, graph_name) if debug_dir else None
        if self.path:
            os.makedirs(self.path, exist_ok=True)

    def write(self, file_name: str, text: str) -> None:
        if not self.path:
            return
        with open(os.path.join(self.path, file_name), "w", encoding="utf-8") as file:
            file.write(text)
        log.debug("wrote %s", os.path.join(self.path, file_name))

    def __bool__(self) -> bool:
        return self.path is not None
