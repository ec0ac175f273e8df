"""What a GEMM's epilogue costs when cuBLAS computes the GEMM: the bytes it adds to ait's own
kernels, read off the plan in which every GEMM runs through ATen.

A fused GEMM kernel (the Triton template, CUTLASS, cuBLASLt's epilogue) is measured against
cuBLAS plus the bytes the epilogue would move on its own, at copy bandwidth. Charging the
epilogue as a separate kernel (the product read, its other inputs read, its outputs written)
holds where it would be one. But with cuBLAS the epilogue's ops join whatever kernel reads them:
ViT's ``fc2 + residual`` joins the next LayerNorm's kernel, which reads the product and the
residual and writes the sum (the next residual) and the normalised rows. With the epilogue fused
into the GEMM, that kernel still runs, reading the sum instead. The difference between the two
plans is two tensors, not the three a separate kernel moves; where the sum is not needed after
the LayerNorm, one. On the H200 (benchmarks/results/nvidia-h200/gemm_seeds, ViT-B/16 at 128 and
ViT-L/16-384 at 16) the fused kernels chosen per GEMM were slower in the model as a whole; a tensor
of ViT-B's activations is 38.7 MB, about 10 us at copy bandwidth, 6% of its fc2 GEMM.

So, for each kernel of the all-ATen plan that holds some of the epilogue's ops, the bytes that
fusing the epilogue into the GEMM would take out of it: its inputs read only by epilogue ops and
its outputs that are epilogue ops, less the epilogue values its other ops read (which it would
then read as inputs).
"""

from __future__ import annotations

from typing import Iterable

from torch import fx

from ait_dynamo.passes.graph_utils import RESHAPES
from ait_dynamo.passes.plan import FusionGroup, Plan
from ait_dynamo.passes.sizes import static_int

_FOLDED = frozenset(RESHAPES)


def _nbytes(node: fx.Node) -> int | None:
    value = node.meta.get("val")
    numel = static_int(value.numel()) if value is not None and hasattr(value, "numel") else None
    return None if numel is None else numel * value.element_size()


class AtenPlanBytes:
    """The plan in which every GEMM runs through ATen, indexed by node (one per graph)."""

    def __init__(self, plan: Plan):
        self.group_of: dict[fx.Node, FusionGroup] = {}
        for step in plan.steps:
            if isinstance(step, FusionGroup):
                for node in step.nodes:
                    self.group_of[node] = step

    def epilogue_bytes(self, epilogue: Iterable[fx.Node]) -> int | None:
        """Bytes the epilogue's ops (and prologue's: casts of the operands) add to the kernels of
        the all-ATen plan, or None where the plan cannot tell (an op outside any generated kernel,
        or sizes known only at run time): the caller then charges a separate kernel."""
        chain = set(epilogue)
        groups: list[FusionGroup] = []
        for node in chain:
            group = self.group_of.get(node)
            if group is None:
                if node.target in _FOLDED:  # a reshape folded into the indexing of its reader
                    continue
                return None
            if group not in groups:
                groups.append(group)
        total = 0
        for group in groups:
            members = set(group.nodes)
            others = members - chain
            for node in group.inputs:  # read only by the epilogue: the fused GEMM reads it instead
                readers = [u for u in node.users if u in members]
                if readers and all(u in chain for u in readers):
                    size = _nbytes(node)
                    if size is None:
                        return None
                    total += size
            for node in group.outputs:  # written by the fused GEMM instead
                if node in chain:
                    size = _nbytes(node)
                    if size is None:
                        return None
                    total += size * group.output_copies.get(node, 1)
            for node in members & chain:  # then read back by what stays in the kernel
                if any(u in others for u in node.users):
                    size = _nbytes(node)
                    if size is None:
                        return None
                    total -= size
        return max(total, 0)
