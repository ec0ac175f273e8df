"""What a partition saved and recomputed: logged, written to the debug dir, kept for tests."""

from __future__ import annotations

import collections
import json
import logging
from dataclasses import asdict, dataclass, field

import torch
from torch import fx

from ait_dynamo.partitioners.graph_info import is_tensor_node, size_hint, tensor_bytes

log = logging.getLogger("ait_dynamo")


@dataclass
class SavedTensor:
    name: str
    shape: list[int]
    dtype: str
    bytes: int  # bytes of the storage it keeps alive; 0 when an earlier saved tensor or a parameter holds it
    parameter: bool  # a parameter or buffer, or a view of one (alive anyway)
    view_of: str | None = None  # the saved tensor or parameter whose storage this one views


@dataclass
class PartitionReport:
    name: str
    saved: list[SavedTensor]
    saved_bytes: int  # what the backward holds on to, parameters and buffers excluded
    default_bytes: int  # the same for the default partition (save every forward value the backward reads)
    functorch_bytes: int | None  # the same for functorch's min_cut_rematerialization_partition
    recomputed: list[str]  # forward nodes the backward recomputes ("name = op")
    budget_bytes: int | None
    budget_met: bool
    cuts_tried: int
    solve_seconds: float
    estimated_recompute_us: float
    solver: str = "scipy"
    extra: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        lines = [
            f"partition {self.name}: saves {len(self.saved)} tensors, {_mib(self.saved_bytes)}",
            f"  default partition saves {_mib(self.default_bytes)}"
            + (f", functorch min-cut saves {_mib(self.functorch_bytes)}" if self.functorch_bytes is not None else ""),
            f"  memory budget: {'none' if self.budget_bytes is None else _mib(self.budget_bytes)}"
            + ("" if self.budget_met else " (NOT met: best achievable shown)"),
            f"  {len(self.recomputed)} nodes recomputed in backward "
            f"(costly recompute ~{self.estimated_recompute_us:.1f} us); {self.cuts_tried} cut(s) solved "
            f"with {self.solver} in {self.solve_seconds * 1e3:.1f} ms",
            "  saved tensors:",
        ]
        for saved in self.saved:
            tag = " (parameter)" if saved.parameter else ""
            if saved.view_of is not None:
                tag += f" (views {saved.view_of})"
            lines.append(f"    {saved.name}: {tuple(saved.shape)} {saved.dtype} {saved.bytes} B{tag}")
        lines.append("  recomputed:")
        lines.extend(f"    {entry}" for entry in self.recomputed)
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.3f} MiB ({value} B)"


def storage_key(value: torch.Tensor) -> int | None:
    """Identity of the storage a (fake) tensor views: views of one tensor share it."""
    try:
        return int(value.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, AttributeError):  # no storage (a tensor subclass)
        return None


def _storage_bytes(value: torch.Tensor) -> int:
    try:
        return size_hint(value.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError, AttributeError):
        return tensor_bytes(value)


def saved_tensors(bw_module: fx.GraphModule, parameters: dict[int, str]) -> list[SavedTensor]:
    """The tensors a backward graph takes from its forward (every input but the tangents).

    A saved view keeps its whole base alive, so bytes are counted per storage, once: three
    views of one [3, 16, 4, 64] q/k/v buffer hold that buffer, not three [16, 16, 16] tensors.
    ``parameters`` maps the storage keys of parameters and buffers to their names: they and
    their views count 0 (alive anyway)."""
    result = []
    owners: dict[int, str] = dict(parameters)
    for node in bw_module.graph.find_nodes(op="placeholder"):
        if "tangents" in str(node.target) or not is_tensor_node(node):
            continue
        value: torch.Tensor = node.meta["val"]
        shape = [size_hint(s) for s in value.shape]
        key = storage_key(value)
        owner = owners.get(key) if key is not None else None
        parameter = key in parameters if key is not None else False
        if key is not None and owner is None:
            owners[key] = node.name
        held = 0 if owner is not None else (_storage_bytes(value) if key is not None else tensor_bytes(value))
        view_of = owner if owner is not None and owner != node.name else None
        result.append(SavedTensor(node.name, shape, str(value.dtype).replace("torch.", ""), held,
                                  parameter, view_of))
    return result


def parameter_storages(nodes: list[fx.Node]) -> dict[int, str]:
    """Storage key → name for the parameter and buffer placeholders ``nodes``."""
    result: dict[int, str] = {}
    for node in nodes:
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor):
            key = storage_key(value)
            if key is not None:
                result.setdefault(key, node.name)
    return result


def saved_bytes_of(bw_module: fx.GraphModule, parameters: dict[int, str]) -> int:
    """Bytes of the distinct storages the backward keeps alive, parameters excluded."""
    return sum(saved.bytes for saved in saved_tensors(bw_module, parameters))


REPORTS: collections.deque[PartitionReport] = collections.deque(maxlen=256)
"""The most recent partition reports, newest last (tests and benchmarks read them)."""


def publish(report: PartitionReport, debug_dir: str | None) -> None:
    from ait_dynamo.debug import DebugDir

    REPORTS.append(report)
    if log.isEnabledFor(logging.INFO):
        log.info("%s", report.text().rstrip())
    if debug_dir:
        debug = DebugDir(debug_dir, report.name)
        debug.write("partition.txt", report.text())
        debug.write("partition.json", report.to_json())
