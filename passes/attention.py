"""Attention → ``scaled_dot_product_attention``, on the pre-dispatch graph (before AOTAutograd).

The pattern, from the output back (``passes/patterns.py``; every stage in brackets is optional):

    out = matmul|bmm( [dropout]( [cast]( softmax|_softmax|_safe_softmax(
              [+ mask | masked_fill(., cond, -inf) | where(keep, ., -inf)](
                  [* scale | / divisor]( matmul|bmm(q [* scale], kᵀ) | baddbmm(bias, q, kᵀ) )),
              dim=-1))), v)

It covers ``nn.MultiheadAttention`` (bmm / baddbmm on [batch·heads, L, E]), timm's explicit
attention, and the eager attention of Hugging Face BERT, GPT-2, T5 (no scale) and Llama (with
repeated key/value heads), in inference and training: the graph is rewritten before AOTAutograd
differentiates it, so the backward is SDPA's own. The scale factors multiply into SDPA's
``scale``; a 3-d batch gets a leading dim of 1 (the fused kernels want 4-d); ``is_causal`` is
never inferred (a causal mask stays an explicit mask).

A match is rewritten only where the result is the same function:

- intermediate values (scores, probabilities) must have no other use: a model that returns its
  attention weights keeps them;
- q, k and v share one floating dtype and their batch dims; the probabilities are cast back to
  that dtype before the last product;
- additive masks have q's dtype and broadcast to the scores; a ``masked_fill``/``where`` mask must
  fill with ``-inf`` (a finite fill, as in ``finfo.min``, gives a row that masks every key another
  value than SDPA does). Where a row masks every key, eager's softmax gives NaN and SDPA zeros;
- an attention over few keys (``attention_min_keys``, 64) stays explicit: a speed rule, not a
  semantic one (Swin's 49-key windows ran slower through SDPA on the H200);
- **dropout's random stream**: with ``fallback_random=True`` (the default: random ops draw
  eager's numbers under the same seed), attention with active dropout is not rewritten, since
  SDPA would draw its own mask. With ``fallback_random=False`` it is, with SDPA's dropout.

Every refusal is recorded with its reason (``pre_autograd.record_rewrites``), and reaches the
fusion report of the graphs compiled from it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import fx
from torch.fx.experimental.symbolic_shapes import statically_known_true

from ait_dynamo.passes.pre_autograd import record_rewrites
from ait_dynamo.passes.patterns import AnyOf, Capture, Const, Match, Op, argument, find_matches, maybe

log = logging.getLogger("ait_dynamo")
aten = torch.ops.aten


_MATMULS = (aten.matmul.default, aten.bmm.default)
_SOFTMAXES = (aten.softmax.int, aten._softmax.default, aten._safe_softmax.default)
_TRANSPOSES = (aten.transpose.int, aten.permute.default)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_Q = AnyOf((Op((aten.mul.Tensor,), (Capture("q"), Const("q_scale", _number))), Capture("q")))
_K_T = Op(_TRANSPOSES, (Capture("k"),), name="k_t")
_SCORES = AnyOf((
    Op(_MATMULS, (_Q, _K_T), name="scores"),
    Op((aten.baddbmm.default,), (Capture("bias"), _Q, _K_T), name="scores"),
))
_SCALED = AnyOf((
    Op((aten.mul.Tensor,), (_SCORES, Const("scale", _number))),
    Op((aten.div.Tensor,), (_SCORES, Const("divisor", _number))),
    _SCORES,
))
_ADDS = (aten.add.Tensor, aten.add_.Tensor)  # ``scores += mask`` (T5) writes a value nothing else reads
_MASKED = AnyOf((
    Op(_ADDS, (_SCALED, Capture("mask")), name="add_mask"),
    Op((aten.add.Tensor,), (Capture("mask"), _SCALED), name="add_mask"),
    Op((aten.masked_fill.Scalar,), (_SCALED, Capture("fill_where"), Const("fill", _number))),
    Op((aten.where.ScalarOther,), (Capture("keep_where"), _SCALED, Const("fill", _number))),
    _SCALED,
))


def _cast(inner: Any, name: str = "cast") -> AnyOf:
    return AnyOf((Op((aten.to.dtype,), (inner,), name=name), Op((aten.type_as.default,), (inner,), name=name),
                  Op((aten._to_copy.default,), (inner,), name=name)))


# T5 and others upcast the scores before the softmax (``scores.float()``)
_SOFTMAX = Op(_SOFTMAXES, (maybe(lambda inner: _cast(inner, "upcast"), _MASKED), Const("dim", _integer)),
              name="softmax")


def _dropout(inner: Any) -> Op:
    return Op((aten.dropout.default,), (inner, Const("p", _number), Const("train", lambda v: isinstance(v, bool))))


ATTENTION = Op(_MATMULS, (maybe(_dropout, maybe(_cast, _SOFTMAX)), Capture("v")), name="output")


def _meta(value: Any) -> torch.Tensor | None:
    meta = value.meta.get("val") if isinstance(value, fx.Node) else None
    return meta if isinstance(meta, torch.Tensor) else None


def _same(a: Any, b: Any) -> bool:
    return statically_known_true(a == b)


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    if len(shape) > len(target):
        return False
    return all(_same(s, 1) or _same(s, t) for s, t in zip(reversed(shape), reversed(target)))


def _sdpa_arguments(found: Match, config: Any) -> dict[str, Any] | str:
    """The arguments of the replacement, or why the match is not the same function as SDPA."""
    c = found.captures
    if found.escapes is not None:
        return f"{found.escapes.name} is also used outside the attention (are its weights returned?)"
    q, k, v, out = (_meta(c.get(n)) for n in ("q", "k", "v", "output"))
    if q is None or k is None or v is None or out is None:
        return "q, k or v is not a tensor"
    rank = q.dim()
    if rank not in (3, 4) or k.dim() != rank or v.dim() != rank:
        return f"q, k, v of ranks {q.dim()}, {k.dim()}, {v.dim()} (3-d or 4-d wanted)"
    k_t = c["k_t"]
    if k_t.target is aten.transpose.int:
        swapped = {argument(k_t, 1) % rank, argument(k_t, 2) % rank}
    else:
        perm = [d % rank for d in argument(k_t, 1)]
        swapped = {rank - 2, rank - 1} if perm == list(range(rank - 2)) + [rank - 1, rank - 2] else set()
    if swapped != {rank - 2, rank - 1}:
        return "k is not transposed in its last two dims"
    if c["dim"] % rank != rank - 1:
        return f"softmax over dim {c['dim']}, not the last"
    if not (all(_same(a, b) and _same(a, w) for a, b, w in zip(q.shape[:-2], k.shape[:-2], v.shape[:-2]))
            and _same(q.shape[-1], k.shape[-1]) and _same(k.shape[-2], v.shape[-2])):
        return f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not line up (batch dims broadcast?)"
    if q.dtype not in _FLOATS or k.dtype != q.dtype or v.dtype != q.dtype or out.dtype != q.dtype:
        return f"dtypes q {q.dtype}, k {k.dtype}, v {v.dtype}, output {out.dtype} differ"
    if q.device != k.device or q.device != v.device:
        return "q, k, v on different devices"
    least = getattr(config, "attention_min_keys", 0)
    if statically_known_true(k.shape[-2] <= least):
        return (f"{k.shape[-2]} keys, at most attention_min_keys={least}: the scores are small, and SDPA's "
                "fused kernels slower than the explicit products and softmax")
    scores = c["scores"]
    if scores.target is aten.baddbmm.default and (argument(scores, 3) != 1 or argument(scores, 4) != 1):
        return "baddbmm with beta or alpha other than 1"
    if "add_mask" in c and argument(c["add_mask"], 2) != 1:
        return "mask added with alpha other than 1"
    scores_shape = tuple(_meta(scores).shape)
    masks = [c[name] for name in ("bias", "mask") if name in c]
    if len(masks) + ("fill" in c) > 1:
        return "two masks"
    mask_kind = None
    if masks:
        mask = _meta(masks[0])
        if mask is None:
            return "the added mask is not a tensor"
        if mask.dtype != q.dtype:
            return f"additive mask of dtype {mask.dtype} on {q.dtype} scores (SDPA wants the query's dtype)"
        if not _broadcasts_to(tuple(mask.shape), scores_shape):
            return f"mask {tuple(mask.shape)} does not broadcast to the scores {scores_shape}"
        mask_kind = "additive"
    elif "fill" in c:
        if c["fill"] != -math.inf:
            return (f"masked with the finite value {c['fill']:g}: where a row masks every key, SDPA's "
                    "result differs from eager's")
        cond = _meta(c.get("fill_where", c.get("keep_where")))
        if cond is None or cond.dtype != torch.bool or not _broadcasts_to(tuple(cond.shape), scores_shape):
            return "the mask of masked_fill/where is not a boolean tensor that broadcasts to the scores"
        mask_kind = "masked_fill" if "fill_where" in c else "where"
    if c["softmax"].target is aten._safe_softmax.default and mask_kind is not None:
        return "_safe_softmax with a mask (rows that mask every key give zeros, SDPA's may not)"
    dropout_p = 0.0
    if c.get("train") and c.get("p", 0) > 0:
        if getattr(config, "fallback_random", True):
            return ("attention dropout in training: eager's dropout draws its own numbers, SDPA would draw "
                    "others (fallback_random=True keeps eager's stream; set it False to rewrite)")
        dropout_p = float(c["p"])
    scale = float(c.get("q_scale", 1.0)) * float(c.get("scale", 1.0))
    if "divisor" in c:
        if c["divisor"] == 0:
            return "division of the scores by zero"
        scale /= float(c["divisor"])
    mask_node = masks[0] if masks else c.get("fill_where", c.get("keep_where"))
    return {"q": c["q"], "k": c["k"], "v": c["v"], "rank": rank, "mask": mask_node, "mask_kind": mask_kind,
            "dropout_p": dropout_p, "scale": scale, "dtype": q.dtype, "keys": k.shape[-2],
            "write_out_mask": mask_kind is not None and not _contiguous_over_keys(_meta(mask_node), k.shape[-2])}


def _contiguous_over_keys(mask: torch.Tensor, keys: Any) -> bool:
    """Whether the mask's last dim runs over the keys with unit stride (a broadcast or transposed
    one does not)."""
    if mask.dim() == 0:
        return statically_known_true(keys == 1)
    if statically_known_true(mask.shape[-1] == 1):
        return statically_known_true(keys == 1)
    return statically_known_true(mask.stride(-1) == 1)


def _replace(graph: fx.Graph, root: fx.Node, args: dict[str, Any]) -> fx.Node:
    rank = args["rank"]
    with graph.inserting_before(root):
        def four_d(node: fx.Node, own_rank: int) -> fx.Node:
            # [batch·heads, L, E] → [1, batch·heads, L, E]: the fused kernels take 4-d inputs
            return graph.call_function(aten.unsqueeze.default, (node, 0)) if rank == 3 and own_rank == 3 else node

        q, k, v = (four_d(args[name], 3) for name in ("q", "k", "v"))
        mask = args["mask"]
        if args["mask_kind"] in ("masked_fill", "where"):
            inf = -math.inf
            blocked, open_ = (inf, 0.0) if args["mask_kind"] == "masked_fill" else (0.0, inf)
            mask = graph.call_function(aten.where.Scalar, (mask, blocked, open_))
            mask = graph.call_function(aten.to.dtype, (mask, args["dtype"]))
        if mask is not None:
            mask_rank = _meta(args["mask"]).dim()
            for _ in range(mask_rank, 2):  # SDPA reads a mask's last two sizes: a [keys] mask becomes [1, keys]
                mask = graph.call_function(aten.unsqueeze.default, (mask, 0))
            if args["write_out_mask"]:
                # CUDA's memory-efficient SDPA raises on a mask whose last dim is not contiguous
                # ("(*bias): last dimension must be contiguous", torch 2.11 on the H200: a 0-d mask,
                # broadcast over the keys): the mask is written out over the keys, once
                keys = args["keys"] if isinstance(args["keys"], int) else graph.call_function(
                    aten.sym_size.int, (args["k"], -2))
                mask = graph.call_function(aten.expand.default, (mask, [-1] * (max(mask_rank, 2) - 1) + [keys]))
                mask = graph.call_function(aten.clone.default, (mask,), {"memory_format": torch.contiguous_format})
            mask = four_d(mask, max(mask_rank, 2))
        attention = graph.call_function(aten.scaled_dot_product_attention.default,
                                        (q, k, v, mask, args["dropout_p"], False), {"scale": args["scale"]})
        result = graph.call_function(aten.squeeze.dim, (attention, 0)) if rank == 3 else attention
    root.replace_all_uses_with(result)
    return attention


def _near_misses(graph: fx.Graph, taken: set[fx.Node]) -> list[str]:
    """Softmaxes that feed a matmul's first operand without forming the pattern: why not."""
    lines = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in _SOFTMAXES or node in taken:
            continue
        consumer, seen = node, 0
        while len(consumer.users) == 1 and seen < 3:
            (consumer,) = consumer.users
            seen += 1
            if consumer.op == "call_function" and consumer.target in _MATMULS:
                lines.append(f"attention at {consumer.name} kept: the scores {node.name} normalises are not "
                             "q·kᵀ with an optional scale and mask")
                break
    return lines


def fuse_attention(gm: fx.GraphModule, config: Any) -> fx.GraphModule:
    """Replace attention subgraphs with ``aten.scaled_dot_product_attention`` (see the module doc)."""
    graph = gm.graph
    lines: list[str] = []
    matched: set[fx.Node] = set()
    replaced = 0
    for found in find_matches(graph, ATTENTION, _MATMULS):
        matched.update(found.nodes)
        decided = _sdpa_arguments(found, config)
        if isinstance(decided, str):
            lines.append(f"attention at {found.root.name} kept: {decided}")
            continue
        _replace(graph, found.root, decided)
        replaced += 1
        mask = {"additive": ", additive mask", "masked_fill": ", -inf mask", "where": ", -inf mask"}.get(
            decided["mask_kind"] or "", "")
        if decided["write_out_mask"]:
            mask += " written out over the keys"
        lines.append(f"attention at {found.root.name} -> scaled_dot_product_attention (scale {decided['scale']:.6g}"
                     f"{mask}{', dropout ' + str(decided['dropout_p']) if decided['dropout_p'] else ''})")
    lines += _near_misses(graph, matched)
    if replaced:
        graph.eliminate_dead_code()
        gm.recompile()
    for line in lines:
        log.info("%s", line)
    record_rewrites(gm, lines, replaced)
    return gm
