"""Static buffer slots (issue 12): a kernel output with static sizes takes the buffer of a value
that died earlier in the same call, of exactly its layout, instead of a fresh allocation.

The plan frees each value right after its last use (``plan.frees_after``: ``del name`` in the
wrapper). Here a dead buffer whose layout a later kernel output needs is kept instead and handed
over (``buf7 = buf3``; ``buf3`` is then deleted with the step that took it), so that the call
allocates once per slot, as AITemplate's memory planner assigns tensors to offsets of one blob by
lifetime. A buffer no later output can take is freed where it was before. What qualifies, on both
sides, is what keeps the hand-over invisible:

* the dead value is a buffer a kernel of this graph wrote, at offset 0 of its own storage, with
  static sizes and strides, and the graph's output is none of it nor any view of it;
* it is dead for good: every view of it (transitively) has been read for the last time;
* the taker is a fresh kernel output (not one written into a dying input in place) with the same
  sizes, strides, dtype and device.

The hand-over costs one assignment where a fresh allocation cost a ``torch.empty_strided`` call
(1.5-2.2 us of host time on the 2-core CPU machine, more through the CUDA caching allocator). The
buffer stays allocated from its death to the hand-over, so a hand-over is made only where that
keeps every step in between at or under the plan's peak (``passes/plan_memory.py``), and from the
buffer that died last (the shortest hold). Without that rule, in ResNet-50's bf16 training
backward on the H200, a 6.1 MiB gradient of the last block, dead after its convolution's backward,
was kept for a kernel output 25 steps later: through the next convolution's backward, then the
step's measured peak.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import fx

from ait_dynamo.passes.graph_utils import has_static_layout
from ait_dynamo.passes.plan import FusionGroup, Plan
from ait_dynamo.passes.plan_memory import aliases as storage_aliases, live_bytes, storage_bytes


def _layout(value: Any) -> tuple | None:
    if not has_static_layout(value) or value.storage_offset() != 0 or value.numel() == 0:
        return None
    return (tuple(value.shape), tuple(value.stride()), value.dtype, value.device)


class SlotPool:
    """Built once per plan; the wrapper generator calls :meth:`take` for each fresh kernel output
    of a step, :meth:`hold` once the step's frees are known, and :meth:`finish` at the end."""

    def __init__(self, plan: Plan, names: Callable[[fx.Node], str]):
        self.names = names
        self.live = live_bytes(plan)  # per step, without any hold
        self.peak = max(self.live, default=0)
        self.held_bytes = [0] * len(self.live)  # per step, the dead buffers kept for a hand-over
        self.memory_death: dict[fx.Node, int] = {}  # pooled buffer → the step its memory died after
        name_death: dict[fx.Node, int] = {}
        for index, nodes in plan.frees_after.items():
            for node in nodes:
                name_death[node] = index
        outputs = set(plan.output.all_input_nodes)
        # in plan order, not a set's: which of two buffers dying at one step a later output takes,
        # and the order of the del lines, must not depend on node hashes (object ids), or the
        # same graph generates another source in every process and the on-disk cache never hits
        written = list(dict.fromkeys(n for step in plan.steps if isinstance(step, FusionGroup) for n in step.outputs))
        self.names_dying: dict[int, list[fx.Node]] = {}  # step → poolable buffers whose name dies there
        self.memory_dying: dict[int, list[fx.Node]] = {}  # step → poolable buffers dead after it
        for node in written:
            aliases = set(storage_aliases(node))
            if _layout(node.meta.get("val")) is None or aliases & outputs or any(a not in name_death for a in aliases):
                continue
            self.names_dying.setdefault(name_death[node], []).append(node)
            self.memory_dying.setdefault(max(name_death[a] for a in aliases), []).append(node)
        self.free: dict[tuple, list[fx.Node]] = {}  # layout → dead buffers, in the order they died
        self.held: dict[fx.Node, list[str]] = {}  # buffers whose name is kept → the del list it came from

    def hold(self, index: int, frees: list[str], consumed: set[fx.Node]) -> None:
        """After step ``index``: poolable buffers whose name dies here keep it (until taken, or
        given back by :meth:`finish`); buffers whose memory dies here join the pool. ``consumed``:
        buffers a kernel just took over in place (``kernels/reuse.py``): not free."""
        for node in self.names_dying.get(index, ()):
            name = self.names(node)
            if node not in consumed and name in frees:
                frees.remove(name)
                self.held[node] = frees
        for node in self.memory_dying.get(index, ()):
            if node in self.held:
                self.free.setdefault(_layout(node.meta["val"]), []).append(node)
                self.memory_death[node] = index

    def take(self, output: fx.Node, index: int) -> str | None:
        """The name of a dead buffer ``output``, made by step ``index``, can be written into, or
        ``None``: one whose hold until then keeps every step under the plan's peak."""
        layout = _layout(output.meta.get("val"))
        candidates = self.free.get(layout) if layout is not None else None
        if not candidates:
            return None
        size = storage_bytes(output.meta["val"])
        for node in reversed(candidates):  # the latest death first: the shortest hold
            held_over = range(self.memory_death[node] + 1, index)
            if all(self.live[step] + self.held_bytes[step] + size <= self.peak for step in held_over):
                for step in held_over:
                    self.held_bytes[step] += size
                candidates.remove(node)
                del self.held[node]
                return self.names(node)
        return None

    def finish(self) -> None:
        """Names held for a hand-over that never came are deleted where they were before."""
        for node, frees in self.held.items():
            frees.append(self.names(node))
        self.held = {}
        self.free = {}
