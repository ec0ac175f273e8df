"""Time the min-cut partitioner on the joint graph of a 24-layer transformer.

    python -m benchmarks partition [--layers 24] [--dim 64] [--repeat 3] [--out DIR]

(``python -m benchmarks.partition_bench ...`` is the same command.) Traces a stack of seed encoder
blocks (benchmarks/models.py) through AOTAutograd once, keeps the joint forward+backward graph,
then partitions fresh copies of it with our partitioner (scipy and networkx max-flow) and with
functorch's, timed by ``measure.time_step`` (the copy is a phase of its own, outside the time),
printing the median time of each and the bytes each saves; with ``--out``, also
``DIR/partition_bench.json``. The graph's structure does not depend on ``--dim``; a small one keeps
tracing fast on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn
from torch._functorch import partitioners as functorch_partitioners
from torch._functorch.aot_autograd import aot_module

from ait_dynamo.config import AitConfig
from ait_dynamo.partitioners.mincut import _copy_joint, min_cut_rematerialization_partition
from ait_dynamo.partitioners.report import REPORTS, parameter_storages, saved_bytes_of
from ait_dynamo.passes.decompositions import decomposition_table
from benchmarks import cli
from benchmarks.measure import TimingPolicy, time_step
from benchmarks.models import EncoderBlock
from benchmarks.recording import Record, Recorder, provenance


@dataclass
class JointGraph:
    module: fx.GraphModule
    num_fwd_outputs: int
    static_lifetime_input_indices: list[int]

    def copy(self) -> fx.GraphModule:
        return _copy_joint(self.module)

    def num_nodes(self) -> int:
        return len(self.module.graph.nodes)


def capture_joint_graph(model: nn.Module, *inputs: torch.Tensor) -> JointGraph:
    """The joint graph AOTAutograd builds for ``model(*inputs)`` (partitioned by default meanwhile)."""
    captured: list[JointGraph] = []

    # aot_module passes parameters and buffers first; as under torch.compile, they are static
    # inputs (alive anyway, free to save).
    num_state = len(list(model.parameters())) + len(list(model.buffers()))

    def capture(joint_module: fx.GraphModule, joint_inputs: Any, **kwargs: Any):
        static = sorted(set(kwargs.get("static_lifetime_input_indices") or []) | set(range(num_state)))
        captured.append(JointGraph(_copy_joint(joint_module), kwargs["num_fwd_outputs"], static))
        return functorch_partitioners.default_partition(joint_module, joint_inputs, **kwargs)

    def nop(gm: fx.GraphModule, _: Any) -> Callable[..., Any]:
        from functorch.compile import make_boxed_func

        return make_boxed_func(gm)

    # Trace with the backend's decompositions, so the joint graph is the one ait partitions.
    decompositions = decomposition_table(AitConfig.create(environ={}))
    compiled = aot_module(model, fw_compiler=nop, bw_compiler=nop, partition_fn=capture, decompositions=decompositions)
    compiled(*inputs).sum().backward()
    assert captured, "AOTAutograd built no joint graph"
    return captured[-1]


def transformer_joint_graph(layers: int = 24, dim: int = 64, heads: int = 4, batch: int = 2, seq: int = 16) -> JointGraph:
    torch.manual_seed(0)
    model = nn.Sequential(*[EncoderBlock(dim, heads, 4 * dim) for _ in range(layers)])
    x = torch.randn(batch, seq, dim, requires_grad=True)
    return capture_joint_graph(model, x)


class _PartitionStep:
    """One partition of a fresh copy of the joint graph, in the shape ``measure.time_step`` times."""

    phases = ("copy", "partition")

    def __init__(self, joint: JointGraph, partition_fn: Callable[..., Any], options: dict[str, Any]):
        self.joint, self.partition_fn, self.options = joint, partition_fn, options
        self.result: Any = None

    def run(self, mark: Callable[[], None]) -> None:
        module = self.joint.copy()
        mark()
        self.result = self.partition_fn(module, None, num_fwd_outputs=self.joint.num_fwd_outputs,
                                        static_lifetime_input_indices=self.joint.static_lifetime_input_indices,
                                        **self.options)
        mark()


def time_partition(joint: JointGraph, partition_fn: Callable[..., Any], repeat: int = 3, **options: Any) -> tuple[float, Any]:
    """Median seconds of one partition of a fresh copy; returns it and the last (fw, bw) result."""
    step = _PartitionStep(joint, partition_fn, options)
    # no warm-up: each partition starts from a fresh copy, and a first one is what a compile pays
    policy = TimingPolicy(warmup_s=0.0, min_warmup_iters=0, measure_s=0.0, min_iters=repeat, max_iters=repeat)
    timing = time_step(step, torch.device("cpu"), policy)
    return timing.phases_ms["partition"] / 1e3, step.result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="folder for partition_bench.json (default: print only)")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for name in ("layers", "dim", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.dim % 4:
        parser.error("--dim must be a multiple of 4 (the blocks have 4 attention heads)")


def execute(args: argparse.Namespace) -> int:
    begin = time.perf_counter()
    joint = transformer_joint_graph(args.layers, args.dim)
    workload = f"transformer_{args.layers}_layers"
    recorder = Recorder(None if args.out is None else Path(args.out) / "partition_bench.json",
                        provenance(args.command_line, "cpu", layers=args.layers, dim=args.dim,
                                   joint_graph_nodes=joint.num_nodes()))
    print(f"{args.layers}-layer transformer joint graph: {joint.num_nodes()} nodes, traced in {time.perf_counter() - begin:.1f} s")
    print("| partitioner | max-flow | partition s (median) | of which choosing the cut s | saved bytes |")
    print("|---|---|---|---|---|")

    def record(backend: str, seconds: float, saved: int, solve: float | None) -> Record:
        return {"workload": workload, "batch": None, "backend": backend, "status": "ok", "median_ms": seconds * 1e3,
                "solve_s": solve, "saved_bytes": saved}

    for solver in ("scipy", "networkx"):
        seconds, _ = time_partition(joint, min_cut_rematerialization_partition, args.repeat, solver=solver,
                                    compare_with_functorch=False)
        report = REPORTS[-1]
        recorder.put([record(f"ait min_cut ({solver})", seconds, report.saved_bytes, report.solve_seconds)])
        print(f"| ait min_cut | {solver} | {seconds:.3f} | {report.solve_seconds:.3f} | {report.saved_bytes} |")
    seconds, (_, bw_module) = time_partition(joint, functorch_partitioners.min_cut_rematerialization_partition, args.repeat)
    primals = [p for p in joint.module.graph.find_nodes(op="placeholder") if "tangents" not in str(p.target)]
    params = parameter_storages([n for i, n in enumerate(primals) if i in joint.static_lifetime_input_indices])
    saved = saved_bytes_of(bw_module, params)
    recorder.put([record("functorch min_cut (networkx)", seconds, saved, None)])
    print(f"| functorch min_cut | networkx | {seconds:.3f} | | {saved} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.alias("partition", argv)


if __name__ == "__main__":
    sys.exit(main())
