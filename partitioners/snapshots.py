"""Snapshots of the inputs the forward overwrites: what the backward may read of their old values.

An input the forward overwrites (batch norm's running statistics: AOTAutograd's ``copy_`` into the
input at the end of the forward) is never saved for the backward (``graph_info.
forward_mutated_inputs``): the backward would read the new values. Before the partition, each such
input gets one snapshot, ``clone(input)`` at the start of the graph, and the ops that read its old
value take the snapshot instead of the input:

* backward ops that read the input (eager refuses such a program at ``backward()`` unless the
  backward never runs that formula);
* forward ops that read it without writing or viewing it: the partitioner may then recompute
  them in the backward from the saved snapshot. Without it, the training batch norm (which reads
  the running statistics) could not be recomputed under a memory budget: ResNet-18 at
  ``memory_budget=0.5`` saved 2602496 bytes against 2372608 with the snapshots
  (benchmarks/results/cpu-epyc/snapshots/); the snapshot of its statistics is a few hundred floats
  a layer.

After the partition, a snapshot the forward does not save for the backward is dropped again
(:func:`drop_unsaved_snapshots`): its readers read the input itself, as they did, where every one
of them runs before the forward's first write of it. So without a budget the forward is the same
graph as before.
"""

from __future__ import annotations

import torch
from torch import fx

from ait_dynamo.partitioners.graph_info import backward_nodes, forward_mutated_inputs
from ait_dynamo.passes.graph_utils import is_mutating, may_alias_input, written_inputs

SNAPSHOT_META = "ait_snapshot_of"


def _reads_old_value(node: fx.Node, backward: set[fx.Node]) -> bool:
    """A reader of an input that can take its snapshot instead: any backward op; a forward op
    that neither writes its operands nor returns a view of one (a view may be written through)."""
    if node.op != "call_function":
        return False
    return node in backward or not (is_mutating(node) or may_alias_input(node))


def snapshot_mutated_inputs(graph: fx.Graph) -> bool:
    """Give the old-value readers of each input the forward overwrites a snapshot of it (module
    doc); returns whether the graph changed."""
    backward = backward_nodes(graph)
    placeholders = list(graph.find_nodes(op="placeholder"))
    if not placeholders:
        return False
    position = {placeholder: index for index, placeholder in enumerate(placeholders)}
    changed = False
    for placeholder in sorted(forward_mutated_inputs(graph, backward), key=position.__getitem__):
        readers = [user for user in placeholder.users if _reads_old_value(user, backward)]
        if not readers:
            continue
        with graph.inserting_after(placeholders[-1]):
            snapshot = graph.call_function(torch.ops.aten.clone.default, (placeholder,))
        snapshot.meta["val"] = placeholder.meta.get("val")
        snapshot.meta[SNAPSHOT_META] = placeholder.name
        for reader in readers:
            reader.replace_input_with(placeholder, snapshot)
        changed = True
    return changed


def drop_unsaved_snapshots(forward: fx.GraphModule) -> bool:
    """Drop the snapshots that the partitioned ``forward`` does not return (the backward does not
    read them) and whose readers all run before the forward's first write of the input: they read
    the input again. Returns whether the graph changed."""
    graph = forward.graph
    output = next(iter(graph.find_nodes(op="output")))
    returned = set(output.all_input_nodes)
    order = {node: index for index, node in enumerate(graph.nodes)}
    first_write: dict[fx.Node, int] = {}  # placeholder -> position of the first op that writes it
    for node in graph.nodes:
        if node.op == "call_function" and is_mutating(node):
            for written in _written_placeholders(node):
                first_write.setdefault(written, order[node])
    changed = False
    for snapshot in [n for n in graph.nodes if SNAPSHOT_META in n.meta and n.op == "call_function"]:
        source = snapshot.args[0]
        if snapshot in returned or not isinstance(source, fx.Node) or source.op != "placeholder":
            continue
        written_at = first_write.get(source, len(order))
        if any(order[user] >= written_at for user in snapshot.users):
            continue
        snapshot.replace_all_uses_with(source)
        graph.erase_node(snapshot)
        changed = True
    if changed:
        forward.recompile()
    return changed


def _written_placeholders(node: fx.Node) -> set[fx.Node]:
    """The placeholders a mutating ``node`` writes, directly or through a chain of views."""
    result: set[fx.Node] = set()
    for written in written_inputs(node):
        while written.op != "placeholder" and may_alias_input(written) and written.all_input_nodes:
            written = written.all_input_nodes[0]
        if written.op == "placeholder":
            result.add(written)
    return result


__all__ = ["SNAPSHOT_META", "drop_unsaved_snapshots", "snapshot_mutated_inputs"]
