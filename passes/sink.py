"""Run each step that grows memory as late as its first reader allows, where that lowers the peak.

The counterpart of ``passes/hoist.py``. A step whose result is larger than what dies at it (a
weight gradient, ``mm`` then a cast to float32: small inputs, a large result the graph returns)
holds that result from where graph order placed it to its first reader. In ResNet-50's bf16
training backward (H200), the classifier's weight gradient (7.8 MiB in float32, 3.9 in bf16 before
the cast) was made at the backward's start and held through its peak, the last block's first
input gradient; its only reader is the graph's output. Sunk to the end, the step's measured peak
went from 1351.3 to 1343.7 MiB (``benchmarks/results/nvidia-h200/train_peak/``).

A step moves down to just before its first reader (the end, for a result only the graph returns),
past no step that writes what it reads, and only where the plan's memory model
(``passes/plan_memory.py``) says the peak goes down: moving keeps the inputs that died at the step
alive until its new place, and a move that only shifts memory around is not worth changing the
order the user's graph gave.
"""

from __future__ import annotations

from ait_dynamo.passes.graph_utils import may_alias_input
from ait_dynamo.passes.hoist import can_pass, is_barrier
from ait_dynamo.passes.plan import ExternCall, Plan, Step, compute_lifetimes
from ait_dynamo.passes.plan_memory import live_bytes, storages_and_owners

SINK_FACTOR = 2  # a candidate makes at least this many times the bytes that die at it


def _movable(step: Step) -> bool:
    if isinstance(step, ExternCall):
        node = step.node
        return node.op == "call_function" and not may_alias_input(node) and not is_barrier(step)
    return not is_barrier(step)


def _destination(steps: list[Step], index: int, barriers: dict[int, bool]) -> int:
    """Where step ``index`` can go: the position just before its first reader (``len(steps)``
    where none), stopping before a step that writes storage it reads. ``barriers``: each step's
    ``is_barrier`` by ``id``, asked once per plan rather than per candidate and later step (part
    of 0270c86: benchmarks/results/cpu-epyc/compile_time/)."""
    step = steps[index]
    made = set(step.produces())
    for position in range(index + 1, len(steps)):
        later = steps[position]
        if any(node in made for node in later.reads()):
            return position
        if barriers[id(later)] and not can_pass(step, later):
            return position
    return len(steps)


class _Model:
    """The plan's storages and the bytes alive per step, recomputed after each move."""

    def __init__(self, plan: Plan):
        storages, self.owners = storages_and_owners(plan)
        self.live = live_bytes(plan, storages)
        self.peak = max(self.live, default=0)
        self.made = [0] * len(plan.steps)
        self.dying = [0] * len(plan.steps)
        for storage in storages:
            if 0 <= storage.born < len(plan.steps):
                self.made[storage.born] += storage.nbytes
            if storage.born < storage.dies < len(plan.steps):
                self.dying[storage.dies] += storage.nbytes

    def peak_after_move(self, step: Step, index: int, destination: int) -> int:
        """The modeled peak once step ``index`` runs just before ``destination``. The steps in
        between lose its results; each storage it reads whose last reader was before
        ``destination`` lives on until it."""
        extended = {id(storage): storage for node in step.reads() for storage in self.owners.get(node, ())
                    if index <= storage.dies < destination and storage.born < index}
        added = [0] * (destination - index)  # added[k]: bytes kept alive at step index + k
        for storage in extended.values():
            for k in range(storage.dies - index + 1, destination - index):
                added[k] += storage.nbytes
        made = self.made[index]
        between = [self.live[s] - made + added[s - index] for s in range(index + 1, destination)]
        moved = between[-1] + made  # at its new place: at most the last step's memory and its results
        return max(between + [moved] + self.live[:index] + self.live[destination:])


def sink_growing_steps(plan: Plan) -> None:
    """Reorder ``plan.steps`` in place (and recompute its lifetimes) where a growing step's move
    down lowers the modeled peak."""
    model = _Model(plan)
    barriers = {id(step): is_barrier(step) for step in plan.steps}  # the steps live as long as this call
    for index in range(len(plan.steps) - 1, -1, -1):  # last first: a cast moves, then the mm before it
        step = plan.steps[index]
        made = model.made[index]
        if made == 0 or made < SINK_FACTOR * model.dying[index] or not _movable(step):
            continue
        destination = _destination(plan.steps, index, barriers)
        if destination <= index + 1:
            continue
        if model.peak_after_move(step, index, destination) < model.peak:
            plan.steps.insert(destination - 1, plan.steps.pop(index))
            compute_lifetimes(plan)
            model = _Model(plan)
