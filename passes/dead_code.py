"""Remove nodes whose results nobody uses (mutations and other side effects stay)."""

from __future__ import annotations

from typing import Any

from torch import fx


def eliminate_dead_code(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    # fx's own DCE keeps impure nodes (mutating schemas, side-effectful functions) and placeholders.
    if gm.graph.eliminate_dead_code():
        gm.recompile()
    return gm
