"""The ordered lists of graph passes and the driver that runs them.

Every pass is ``def name(gm, config) -> gm``.

``PRE_AUTOGRAD_PASSES`` run on the Dynamo graph traced again into pre-dispatch aten IR, before
AOTAutograd (``passes/pre_autograd.py``): what they rewrite, AOTAutograd then differentiates.
1. fuse_attention: attention → scaled_dot_product_attention; first, since it needs the ops
   whole (matmul, softmax, dropout) as the user wrote them.

``PASSES`` run on each forward, backward or inference graph AOTAutograd hands over. The order:
1. remove_noops first, so CSE sees the real producers and more expressions coincide;
2. CSE before DCE, because merging duplicates leaves the later copies unused; fold_constants
   after CSE, so that values built alike (a mask per block of one stage) fold into one constant;
   move_casts_to_producers next (a cast and a view change places: the planner sees no reshape
   between a cast and its operand's kernel);
3. pad_gemms after CSE, so that each distinct GEMM is measured and padded once; cutlass_gemms
   after it (a padded GEMM meets CUTLASS's 16-byte alignment) and before anything fuses the
   epilogue it takes into its kernel; onednn_gemms
   (CPU graphs where nothing is generated) likewise, and before reinplace_dying_inputs, which
   would turn the activation it folds into an in-place op;
4. cancel_negations (only where nothing is generated) before DCE, which drops the negations it
   reads through;
5. DCE, to drop everything the earlier passes orphaned;
6. channels_last_layout after DCE, so that dead convolutions do not count towards its rule, and
   before the planner, which plans kernels over the strides it chose;
7. split_convolution_bias (only where kernels are generated) after the layout pass, whose rule
   counts nodes: the bias add joins the kernel that reads the convolution;
8. drop_unused_pool_indices after the layout pass (whose propagation knows the traced
   ``max_pool2d_with_indices``; the pass keeps the layout it chose) and before the planner, which
   fuses the ``max_pool2d`` it makes;
9. remove_noops once more: contiguous clones the trace needed on NCHW values (ConvNeXt's permute
   before a linear layer) are identities on NHWC ones;
10. split_training_batch_norm (CUDA, or channels-last where Triton runs) before
    update_batch_norm_stats_in_place, which then finds only the batch norms it left (CPU ones),
    and after the layout pass: the normalisation it writes takes the activation's channels-last
    strides; split_training_batch_norm_backward after the layout pass for the same reason (it
    rewrites backward graphs, the other forward ones);
11. update_batch_norm_stats_in_place, then recompute_broadcast_values (only where kernels are
    generated: copies of a cheap value for each of its readers' kernels; after the batch-norm
    passes, whose gradient sums are readers it must see), then reinplace_dying_inputs, last (only
    where nothing is generated): they need the final users of each value, their in-place ops
    would keep CSE and DCE from touching them, and the layout pass recomputes a functional op's
    layout but leaves an in-place op's as traced.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from torch import fx

from ait_dynamo.passes.attention import fuse_attention
from ait_dynamo.passes.batch_norm_backward_split import split_training_batch_norm_backward
from ait_dynamo.passes.batch_norm_split import split_training_batch_norm
from ait_dynamo.passes.batch_norm_stats import update_batch_norm_stats_in_place
from ait_dynamo.passes.cancel_negations import cancel_negations
from ait_dynamo.passes.cast_views import move_casts_to_producers
from ait_dynamo.passes.constant_fold import fold_constants
from ait_dynamo.passes.conv_bias import split_convolution_bias
from ait_dynamo.passes.cse import common_subexpression_elimination
from ait_dynamo.passes.cutlass_gemm import cutlass_gemms
from ait_dynamo.passes.dead_code import eliminate_dead_code
from ait_dynamo.passes.layout import channels_last_layout
from ait_dynamo.passes.onednn_gemm import onednn_gemms
from ait_dynamo.passes.pad_gemm import pad_gemms
from ait_dynamo.passes.pool_indices import drop_unused_pool_indices
from ait_dynamo.passes.recompute_broadcasts import recompute_broadcast_values
from ait_dynamo.passes.reinplace import reinplace_dying_inputs
from ait_dynamo.passes.remove_noops import remove_noops

log = logging.getLogger("ait_dynamo")

GraphPass = Callable[[fx.GraphModule, Any], fx.GraphModule]

PRE_AUTOGRAD_PASSES: list[GraphPass] = [
    fuse_attention,
]

PASSES: list[GraphPass] = [
    remove_noops,
    common_subexpression_elimination,
    fold_constants,
    move_casts_to_producers,
    pad_gemms,
    cutlass_gemms,
    onednn_gemms,
    cancel_negations,
    eliminate_dead_code,
    channels_last_layout,
    split_convolution_bias,
    drop_unused_pool_indices,
    remove_noops,
    split_training_batch_norm,
    split_training_batch_norm_backward,
    update_batch_norm_stats_in_place,
    recompute_broadcast_values,
    reinplace_dying_inputs,
]


def run_passes(
    gm: fx.GraphModule,
    config: Any,
    dump: Callable[[str, str], None] | None = None,
    passes: list[GraphPass] | None = None,
) -> fx.GraphModule:
    """Run ``passes`` (default :data:`PASSES`) in order; ``dump(file_name, text)`` gets the graph
    after each one as ``NN-name.txt`` (01 is the first pass; 00 is the input graph)."""
    for index, graph_pass in enumerate(PASSES if passes is None else passes, start=1):
        before = len(gm.graph.nodes)
        gm = graph_pass(gm, config)
        log.debug("pass %s: %d -> %d nodes", graph_pass.__name__, before, len(gm.graph.nodes))
        if dump is not None:
            dump(f"{index:02d}-{graph_pass.__name__}.txt", gm.print_readable(print_output=False))
    return gm
