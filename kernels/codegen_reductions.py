"""Reductions inside a generated kernel (mixed into ``codegen.KernelWriter``).

Persistent kernels reduce the whole row held in registers (``tl.sum(tile, 1)``). Looped kernels
accumulate ``[XBLOCK, RBLOCK]`` chunks over the row; the reductions that depend on no pending
reduction share one pass (layer_norm's weight and bias gradients), the others follow in order
(softmax: the max, then the sum of exponentials). amax/amin propagate NaN as ATen does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from ait_dynamo.kernels import op_table
from ait_dynamo.kernels.column_reduction import reads_reduction
from ait_dynamo.kernels.triton_values import compute_dtype, literal, round_to, triton_type
from ait_dynamo.passes.sizes import is_one


def source_identity(source: fx.Node) -> tuple:
    """Dim map of a reduction input read from memory in a group whose space is its shape."""
    shape = tuple(source.meta["val"].shape)
    return tuple(None if is_one(s) else d for d, s in enumerate(shape))


class ReductionWriter:
    """Needs from the host class: group, members, persistent, outer, loop, full_cache, counter,
    reduction_vars, rnumel_name, split, early_stores (full-size outputs no reduction feeds, to
    store in the first pass), early_stored, value(), load(), store(), _loop_header()."""

    group: Any
    members: set
    persistent: bool
    outer: list[str]
    loop: list[str] | None
    full_cache: dict
    counter: int
    reduction_vars: dict
    rnumel_name: str
    split: bool
    early_stores: list
    early_stored: bool

    def _reduction_plan(self, node: fx.Node) -> dict[str, Any]:
        kind = op_table.REDUCTIONS[node.target]
        out_dtype = node.meta["val"].dtype
        source_dtype = node.args[0].meta["val"].dtype
        if kind in ("any", "all"):
            acc_dtype = torch.int32
        else:
            acc_dtype = compute_dtype(out_dtype if kind in ("sum", "mean", "prod") else source_dtype)
        if kind in ("sum", "mean", "any"):
            neutral = literal(0, acc_dtype)
        elif kind in ("prod", "all"):
            neutral = literal(1, acc_dtype)
        elif acc_dtype.is_floating_point:
            neutral = 'float("-inf")' if kind == "max" else 'float("inf")'
        else:
            info = torch.iinfo(acc_dtype)
            neutral = literal(info.min if kind == "max" else info.max, acc_dtype)
        self.counter += 1
        return {"node": node, "kind": kind, "acc_dtype": acc_dtype, "neutral": neutral, "out": f"red{self.counter}"}

    def _masked_input(self, plan: dict[str, Any]) -> str:
        """The reduction's input at the current indices, masked with its neutral element."""
        source = plan["node"].args[0]
        if source in self.members:
            var, _ = self.value(source)
        else:
            var, _ = self.load(source, source_identity(source))
        acc_dtype = plan["acc_dtype"]
        if plan["kind"] in ("any", "all"):
            value = f"({var} != 0).to(tl.int32)"
        elif compute_dtype(source.meta["val"].dtype) != acc_dtype:
            value = f"{var}.to({triton_type(acc_dtype)})"
        else:
            value = var
        return f"tl.where(xmask & rmask, {value}, {plan['neutral']})"

    def _finish(self, plan: dict[str, Any], tile: str) -> None:
        kind, out = plan["kind"], plan["out"]
        if kind == "prod":
            self.outer.append(f"{out} = tl.reduce({tile}, 1, _ait_multiply)[:, None]")
        else:
            name = {"sum": "tl.sum", "mean": "tl.sum", "max": "tl.max", "min": "tl.min", "any": "tl.max", "all": "tl.min"}[kind]
            self.outer.append(f"{out} = {name}({tile}, 1)[:, None]")
        if kind in ("max", "min") and plan["acc_dtype"].is_floating_point:  # ATen propagates NaN
            self.outer.append(
                f"{out} = tl.where(tl.max(({tile} != {tile}).to(tl.int32), 1)[:, None] > 0, float(\"nan\"), {out})"
            )
        if kind in ("any", "all"):
            self.outer.append(f"{out} = {out} > 0")
        if kind == "mean":
            self.outer.append(f"{out} = {out} / {self.rnumel_name}")
        dtype = plan["node"].meta["val"].dtype
        # half-precision results are rounded, as in eager; a split's partial sums (every reduction
        # of a split kernel is one) stay float32 until the finishing kernel has added them up and cast
        if round_to("v", dtype) != "v" and not self.split:
            self.outer.append(f"{out} = {round_to(out, dtype)}")
        self.reduction_vars[plan["node"]] = out

    def _ready_reductions(self, node: fx.Node) -> list[fx.Node]:
        """``node`` and the other pending reductions that depend on no pending reduction: looped
        kernels compute them in one pass over the row."""
        pending = [n for n in self.group.nodes if n.target in op_table.REDUCTIONS and n not in self.reduction_vars]
        return [node] + [n for n in pending if n is not node and not reads_reduction(n.args[0], self.members, pending)]

    def reduction(self, node: fx.Node) -> str:
        if node in self.reduction_vars:
            return self.reduction_vars[node]
        if self.persistent:
            plan = self._reduction_plan(node)
            tile = f"{plan['out']}_in"
            self.outer.append(f"{tile} = {self._masked_input(plan)}")
            self._finish(plan, tile)
            return plan["out"]
        saved_loop, saved_cache = self.loop, self.full_cache
        self.loop, self.full_cache = [], {}
        # ``node`` first: its input may need earlier reductions, emitted (nested) before this loop;
        # then the pending reductions that need none join the same pass
        first = self._reduction_plan(node)
        inputs = {node: self._masked_input(first)}
        plans = [first]
        for other in self._ready_reductions(node)[1:]:
            if other not in self.reduction_vars:
                plan = self._reduction_plan(other)
                inputs[other] = self._masked_input(plan)
                plans.append(plan)
        if self.early_stores and not self.early_stored:  # in the first pass over the row
            self.early_stored = True
            for index, output in self.early_stores:
                self.store(output, index)
        updates = []
        for plan in plans:
            tile = f"{plan['out']}_acc"
            masked = inputs[plan["node"]]
            self.outer.append(f"{tile} = tl.full([XBLOCK, RBLOCK], {plan['neutral']}, {triton_type(plan['acc_dtype'])})")
            kind = plan["kind"]
            if kind in ("sum", "mean"):
                updates.append(f"{tile} = {tile} + {masked}")
            elif kind == "prod":
                updates.append(f"{tile} = {tile} * {masked}")
            else:
                pick = "tl.maximum" if kind in ("max", "any") else "tl.minimum"
                nan = ", propagate_nan=tl.PropagateNan.ALL" if plan["acc_dtype"].is_floating_point else ""
                updates.append(f"{tile} = {pick}({tile}, {masked}{nan})")
        body = self.loop
        self.outer.extend(self._loop_header())
        self.outer.extend("    " + line for line in body + updates)
        for plan in plans:
            self._finish(plan, f"{plan['out']}_acc")
        self.loop, self.full_cache = saved_loop, saved_cache
        return self.reduction_vars[node]
