"""Distributed training step: ViT-B/16 under DistributedDataParallel, eager against Inductor and ait.

    python -m benchmarks.ddp_bench --out DIR                       # every visible GPU, NCCL
    python -m benchmarks.ddp_bench --out DIR --world 1 --batch 32  # one GPU (issue 16)
    python -m benchmarks.ddp_bench --out DIR --device cpu --model tiny --world 2 --backends eager,ait  # gloo smoke test

One step is what a DDP user runs: forward (ViT + cross-entropy, under bf16 autocast on the GPU,
fp32 on a CPU), backward (DDP's bucketed all-reduce overlapping it), SGD step, gradients set to
None. Each backend compiles ``DDP(model)`` with ``torch.compile`` (Dynamo's DDP graph splitting
on, its default), from a fresh copy of the same initial weights.

Before timing, ``CHECK_STEPS`` steps on fixed data give each backend's losses and parameter
updates (parameters after the steps minus the initial ones: a wrong gradient shows there, where
the parameters themselves hardly move); rank 0 compares them with eager's (largest relative loss
difference, relative L2 error of the updates). A backend past ``benchmarks.measure.TOLERANCES``
for its precision is reported as a wrong result and makes the exit status 1. Then the step is timed with CUDA events (median after warm-up, ``benchmarks.measure``),
with kernel time from a profile beside it, peak memory above the model and the first-step (cold
compile) wall time. Throughput is images per second over all ranks.

Writes ``DIR/ddp_bench.json`` and ``DIR/ddp_bench.md`` (rank 0).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from benchmarks import measure
from benchmarks.vit import VIT_B16_224, VitConfig, build_vit
from benchmarks.workloads import WithLoss

MODELS = {"vit_b16": VIT_B16_224, "tiny": VitConfig(image_size=32, patch_size=16, dim=32, depth=2, heads=2)}
BACKENDS = ("eager", "inductor", "inductor-reduce-overhead", "ait", "ait-cudagraphs")
CHECK_STEPS = 3


@dataclass
class Result:
    backend: str
    world: int
    batch_per_rank: int
    step_ms: float | None = None
    kernel_ms: float | None = None
    images_per_s: float | None = None
    peak_mib: float | None = None
    first_step_s: float | None = None
    loss_rel_diff: float | None = None  # largest over the check steps, against eager
    update_rel_error: float | None = None  # relative L2 of all parameter updates over the check steps
    error: str | None = None


class _TrainStep:
    """One DDP training step, in the shape ``benchmarks.measure`` times."""

    phases = ("step",)

    def __init__(self, step_fn: Any, model: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
                 cudagraphs: bool):
        self.step_fn = step_fn
        self.inputs = inputs
        self.device = device
        self.cudagraphs = cudagraphs
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=1e-3)
        self.last_loss: torch.Tensor | None = None

    def run(self, mark: Any) -> None:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        for p in self.params:
            p.grad = None
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else _nothing()
        with autocast:
            loss = self.step_fn(*self.inputs)
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.detach()
        mark()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _compile(ddp: nn.Module, backend: str) -> Any:
    if backend == "eager":
        return ddp
    if backend == "inductor":
        return torch.compile(ddp, backend="inductor", dynamic=False)
    if backend == "inductor-reduce-overhead":
        return torch.compile(ddp, backend="inductor", mode="reduce-overhead", dynamic=False)
    if backend == "ait":
        return torch.compile(ddp, backend="ait", dynamic=False)
    if backend == "ait-cudagraphs":
        return torch.compile(ddp, backend="ait", options={"cuda_graphs": True}, dynamic=False)
    raise ValueError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")


def _run_backend(backend: str, initial: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
                 rank: int, world: int, batch: int, quick: bool) -> tuple[Result, list[float], list[torch.Tensor]]:
    torch._dynamo.reset()
    result = Result(backend, world, batch)
    model = copy.deepcopy(initial).to(device).train()
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step = _TrainStep(_compile(ddp, backend), model, inputs, device, backend.endswith(("reduce-overhead", "cudagraphs")))

    measure.synchronize(device)
    begin = time.perf_counter()
    step.run(lambda: None)
    measure.synchronize(device)
    result.first_step_s = time.perf_counter() - begin
    losses = [float(step.last_loss)]
    for _ in range(CHECK_STEPS - 1):
        step.run(lambda: None)
        losses.append(float(step.last_loss))
    updates = ([p.detach().float().cpu() - p0.detach().float() for p, p0 in zip(model.parameters(), initial.parameters())]
               if rank == 0 else [])

    measure.reset_peak_memory(device)
    baseline = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    timing = measure.time_step(step, device, measure.TimingPolicy.for_device(device, quick=quick))
    peak = measure.peak_memory_mib(device)
    result.step_ms = timing.median_ms
    result.peak_mib = None if peak is None else peak - baseline
    result.kernel_ms = measure.kernel_time_ms(step, device)
    result.images_per_s = world * batch / (timing.median_ms / 1e3)
    del step, ddp, model
    return result, losses, updates


def _relative_l2(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    num = math.sqrt(sum(float((a.double() - e.double()).pow(2).sum()) for a, e in zip(actual, expected)))
    den = math.sqrt(sum(float(e.double().pow(2).sum()) for e in expected))
    return num / max(den, 1e-30)


def _worker(rank: int, world: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if args.device == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        config = MODELS[args.model]
        torch.manual_seed(0)  # every rank starts from the same weights, as DDP requires
        model, source = build_vit(config, prefer_timm=args.model != "tiny")
        initial = WithLoss(model, "cross_entropy")
        generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard of data
        images = torch.randn(args.batch, 3, config.image_size, config.image_size, generator=generator).to(device)
        labels = torch.randint(0, config.num_classes, (args.batch,), generator=generator).to(device)

        results: list[Result] = []
        reference: tuple[list[float], list[torch.Tensor]] | None = None
        for backend in args.backends:
            try:
                result, losses, params = _run_backend(backend, initial, (images, labels), device, rank, world,
                                                      args.batch, args.quick)
            except Exception as error:  # noqa: BLE001 - one backend's failure is a row, the others still run
                result, losses, params = Result(backend, world, args.batch, error=f"{type(error).__name__}: {error}"), [], []
                if rank == 0:
                    traceback.print_exc()
            if backend == "eager" and result.error is None:
                reference = (losses, params)
            elif reference is not None and result.error is None:
                result.loss_rel_diff = max(abs(a - e) / max(abs(e), 1e-30) for a, e in zip(losses, reference[0]))
                if rank == 0:
                    result.update_rel_error = _relative_l2(params, reference[1])
                    tolerance = measure.TOLERANCES["amp-bfloat16" if device.type == "cuda" else "float32"]
                    if max(result.loss_rel_diff, result.update_rel_error) > tolerance:
                        result.error = (f"wrong result: loss differs from eager's by {result.loss_rel_diff:.3g}, "
                                        f"parameter updates by {result.update_rel_error:.3g} (tolerance {tolerance})")
            results.append(result)
            if rank == 0:
                print(_row(result), flush=True)
        if rank == 0:
            _write(args, results, source, device)
    finally:
        dist.destroy_process_group()


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(r: Result) -> str:
    note = (r.error or "")[:160].replace("|", "/").replace("\n", " ")
    return (f"| {r.backend} | {_fmt(r.step_ms, 2)} | {_fmt(r.kernel_ms, 2)} | {_fmt(r.images_per_s, 0)} | "
            f"{_fmt(r.peak_mib, 0)} | {_fmt(r.first_step_s, 1)} | {_fmt(r.loss_rel_diff, 4)} | "
            f"{_fmt(r.update_rel_error, 4)} | {note} |")


def _write(args: argparse.Namespace, results: list[Result], source: str, device: torch.device) -> None:
    import triton  # noqa: PLC0415 - only for the version line

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    header = (f"DDP training step of {args.model} ({source}), world size {results[0].world if results else '?'}, "
              f"batch {args.batch} per rank, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}; "
              f"{name}, torch {torch.__version__}, triton {triton.__version__}")
    eager = next((r for r in results if r.backend == "eager" and r.step_ms), None)
    lines = [header, "", "| backend | step ms | kernel ms | images/s | peak MiB above model | first step s | "
             "loss rel. diff vs eager | updates rel. L2 vs eager | error |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in results]
    if eager:
        lines += ["", "Speed-up over eager (step time): " + ", ".join(
            f"{r.backend} {eager.step_ms / r.step_ms:.2f}x" for r in results if r.step_ms and r.backend != "eager")]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ddp_bench.md"), "w") as file:
        file.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "ddp_bench.json"), "w") as file:
        json.dump({"header": header, "argv": sys.argv[1:], "results": [asdict(r) for r in results]}, file, indent=1)
    print("\n".join(lines))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--world", type=int, default=0, help="processes (default: every visible GPU; 2 on a CPU)")
    parser.add_argument("--model", choices=sorted(MODELS), default="vit_b16")
    parser.add_argument("--batch", type=int, default=32, help="images per rank")
    parser.add_argument("--backends", default="eager,inductor,ait")
    parser.add_argument("--quick", action="store_true", help="two timed steps (smoke test)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    if "eager" not in args.backends:
        args.backends.insert(0, "eager")  # the reference the others are checked against
    elif args.backends[0] != "eager":
        args.backends.remove("eager")
        args.backends.insert(0, "eager")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu")
    if args.device == "cpu" and any(b.endswith(("reduce-overhead", "cudagraphs")) for b in args.backends):
        parser.error("CUDA-graph backends need --device cuda")
    if args.world <= 0:
        args.world = torch.cuda.device_count() if args.device == "cuda" else 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mp.start_processes(_worker, args=(args.world, _free_port(), args), nprocs=args.world, join=True,
                       start_method="spawn")
    with open(os.path.join(args.out, "ddp_bench.json")) as file:
        results = json.load(file)["results"]
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
