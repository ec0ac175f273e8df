"""Depthwise-convolution groups of the fusion planner (issue 13, item 4): a depthwise
``aten.convolution`` the template computes (``kernels/depthwise.py`` says which, and the rule of
option ``gemm_backends`` says whether) starts a group over its output's space [N, C, OH, OW], and
the pointwise work consuming the output (the folded batch norm, the activation, a residual add)
joins it as the epilogue. The group is planned like a GEMM group (``group.gemm`` is the template
op: ``passes/fusion.py`` keeps other groups out, no merges, no reductions, no reshapes of the
product), and written by ``kernels/codegen_conv.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import fx

from ait_dynamo.kernels import depthwise, gemm_choice
from ait_dynamo.passes.fusion_maps import Refused
from ait_dynamo.passes.sizes import is_one

if TYPE_CHECKING:
    from ait_dynamo.passes.fusion import Planner


def is_depthwise_template(node: fx.Node | None) -> bool:
    """Whether a group's template op is a convolution (not a GEMM)."""
    return node is not None and node.target is torch.ops.aten.convolution.default


def start_conv_group(planner: "Planner", node: fx.Node) -> None:
    """A depthwise convolution the template computes starts a group over its output's space."""
    # refusals keep the op class first: "compute_intensive op: ..." is how reports group them
    refusal = depthwise.refusal(node)
    if refusal is not None:
        raise Refused(f"compute_intensive op: {refusal}")
    chosen, why = gemm_choice.backend_choice(node, planner.config.gemm_backends, planner.gemm_measured)
    if not chosen:
        raise Refused(f"compute_intensive op: depthwise convolution runs through ATen ({why})")
    value = node.meta["val"]
    group = planner._new_group(tuple(value.shape))
    group.gemm = node
    planner._add(group, node, tuple(None if is_one(s) else d for d, s in enumerate(value.shape)))
