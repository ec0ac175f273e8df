"""Distributed training step: ViT-B/16 under DistributedDataParallel, eager against Inductor and ait.

    python -m benchmarks ddp --out DIR                       # every visible GPU, NCCL
    python -m benchmarks ddp --out DIR --world 1 --batch 32  # one GPU (issue 16)
    python -m benchmarks ddp --out DIR --device cpu --model tiny --world 2 --backends eager,ait  # gloo smoke test

(``python -m benchmarks.ddp_bench ...`` is the same command.)

One step is what a DDP user runs: forward (ViT + cross-entropy, under bf16 autocast on the GPU,
fp32 on a CPU), backward (DDP's bucketed all-reduce overlapping it), SGD step, gradients set to
None. Each backend compiles ``DDP(model)`` with ``torch.compile`` (Dynamo's DDP graph splitting
on, its default), from a fresh copy of the same initial weights.

Before timing, ``CHECK_STEPS`` steps on fixed data give each backend's losses and the gradients
of the last step (all-reduced, so every rank's data is in them), and the same steps of eager in
float64 (no autocast) the accuracy reference; rank 0 judges each backend by dynamo's accuracy
rule (``measure.same_as_reference``: against eager and float64). A backend that fails it is
reported as a wrong result and makes the exit status 1. The largest relative loss difference and
the relative L2 error of the parameter updates against eager are recorded beside the verdict.
Then the step is timed (``measure.time_step``: CUDA events, median after warm-up), with kernel
time from a profile beside it, peak memory above the model and the first-step (cold compile)
wall time. Throughput is images per second over all ranks.

Writes ``DIR/ddp_bench.json`` (``benchmarks/recording.py``'s format, with provenance) and
``DIR/ddp_bench.md`` (rank 0).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from benchmarks import cli, measure
from benchmarks.backends import parse_backend
from benchmarks.recording import Recorder, provenance
from benchmarks.vit import VIT_B16_224, VitConfig, build_vit
from benchmarks.workloads import Built, WithLoss

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
    accuracy: str | None = None  # dynamo's rule against eager and float64: pass / fail
    error: str | None = None


class _TrainStep:
    """One DDP training step, in the shape ``benchmarks.measure`` times."""

    phases = ("step",)

    def __init__(self, step_fn: Any, model: nn.Module, inputs: tuple[torch.Tensor, ...], cudagraphs: bool,
                 autocast: bool):
        self.step_fn = step_fn
        self.inputs = inputs
        self.cudagraphs = cudagraphs
        self.autocast = autocast
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=1e-3)
        self.last_loss: torch.Tensor | None = None

    def run(self, mark: Any) -> None:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        for p in self.params:
            p.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext():
            loss = self.step_fn(*self.inputs)
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.detach()
        mark()


def _precision(device: torch.device) -> str:
    return "amp-bfloat16" if device.type == "cuda" else "float32"


def _check_steps(backend: str, initial: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
                 float64: bool = False) -> tuple[_TrainStep, nn.Module, float, torch.Tensor, list[torch.Tensor]]:
    """``DDP(copy of initial)`` compiled by ``backend``, after ``CHECK_STEPS`` steps: the step, the
    model, the first step's seconds (cold compile), the losses and the last step's gradients."""
    torch._dynamo.reset()
    spec = parse_backend(backend, device)
    model = copy.deepcopy(initial).to(device).train()
    if float64:
        model = model.double()
        inputs = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    built = Built(ddp, inputs, "train", "float64" if float64 else _precision(device), "ddp")
    fn = spec.backend.compile(ddp, built, spec.options) if spec.backend.compile is not None else ddp
    step = _TrainStep(fn, model, inputs, spec.backend.cudagraphs, autocast=device.type == "cuda" and not float64)
    measure.synchronize(device)
    begin = time.perf_counter()
    step.run(lambda: None)
    measure.synchronize(device)
    first_step_s = time.perf_counter() - begin
    losses = [step.last_loss]
    for _ in range(CHECK_STEPS - 1):
        step.run(lambda: None)
        losses.append(step.last_loss)
    grads = [p.grad.detach().cpu() for p in step.params]
    return step, model, first_step_s, torch.stack(losses).float().cpu(), grads


def _run_backend(backend: str, initial: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
                 world: int, batch: int, quick: bool) -> tuple[Result, list[torch.Tensor], list[torch.Tensor]]:
    """The checked steps and the timing of one backend: (result, [losses, *gradients], updates)."""
    result = Result(backend, world, batch)
    step, model, result.first_step_s, losses, grads = _check_steps(backend, initial, inputs, device)
    updates = [p.detach().float().cpu() - p0.detach().float() for p, p0 in zip(model.parameters(), initial.parameters())]

    baseline = measure.memory_in_use(device)
    timing = measure.time_step(step, device, measure.TimingPolicy.for_device(device, quick=quick))
    peak = measure.peak_memory(device, since=baseline)
    result.step_ms = timing.median_ms
    result.peak_mib = None if peak is None else peak.allocated_mib
    result.kernel_ms = measure.kernel_time_ms(step, device)
    result.images_per_s = world * batch / (timing.median_ms / 1e3)
    del step, model
    return result, [losses, *grads], updates


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def _judge(result: Result, outputs: list[torch.Tensor], updates: list[torch.Tensor],
           eager: tuple[list[torch.Tensor], list[torch.Tensor]], fp64: list[torch.Tensor] | None,
           precision: str) -> None:
    """Rank 0's verdict on one backend against eager (and float64)."""
    result.loss_rel_diff = max(abs(float(a) - float(e)) / max(abs(float(e)), 1e-30)
                               for a, e in zip(outputs[0], eager[0][0]))
    result.update_rel_error = measure.relative_error(_flat(updates), _flat(eager[1]))
    if fp64 is not None:
        passed, why = measure.same_as_reference(outputs, eager[0], fp64, precision)
    else:  # no float64 reference: the relative error against eager, within the precision's tolerance
        tolerance = measure.TOLERANCES[precision]
        passed = max(result.loss_rel_diff, measure.max_relative_error(outputs[1:], eager[0][1:])) <= tolerance
        why = f"beyond the tolerance {tolerance} against eager"
    result.accuracy = "pass" if passed else "fail"
    if not passed:
        result.error = (f"wrong result: {why}; loss differs from eager's by {result.loss_rel_diff:.3g}, "
                        f"parameter updates by {result.update_rel_error:.3g}")


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

        fp64: list[torch.Tensor] | None = None
        try:  # eager in float64: the accuracy reference (every rank takes part in its all-reduces)
            _, _, _, losses64, grads64 = _check_steps("eager", initial, (images, labels), device, float64=True)
            fp64 = [losses64, *grads64]
        except Exception as error:  # noqa: BLE001 - no float64 kernels here: judge against eager alone
            if rank == 0:
                print(f"no float64 reference ({type(error).__name__}: {error})", file=sys.stderr)
        results: list[Result] = []
        eager: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        for backend in args.backends:
            try:
                result, outputs, updates = _run_backend(backend, initial, (images, labels), device, world,
                                                        args.batch, args.quick)
            except Exception as error:  # noqa: BLE001 - one backend's failure is a row, the others still run
                result, outputs, updates = Result(backend, world, args.batch, error=f"{type(error).__name__}: {error}"), [], []
                if rank == 0:
                    traceback.print_exc()
            if backend == "eager" and result.error is None:
                eager = (outputs, updates)
            elif eager is not None and result.error is None and rank == 0:
                _judge(result, outputs, updates, eager, fp64, _precision(device))
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
            f"{_fmt(r.update_rel_error, 4)} | {r.accuracy or '-'} | {note} |")


def _write(args: argparse.Namespace, results: list[Result], source: str, device: torch.device) -> None:
    environment = provenance(args.command_line, device, model=f"{args.model} ({source})",
                             world=results[0].world if results else None, batch_per_rank=args.batch)
    header = (f"DDP training step of {args.model} ({source}), world size {environment['world']}, "
              f"batch {args.batch} per rank, {'bf16 autocast' if device.type == 'cuda' else 'fp32'}; "
              f"{environment['device_name']}, torch {environment['torch']}, triton {environment['triton']}, "
              f"commit {str(environment['git_commit'])[:10]}")
    eager = next((r for r in results if r.backend == "eager" and r.step_ms), None)
    lines = [header, "", f"`{args.command_line}`", "",
             "| backend | step ms | kernel ms | images/s | peak MiB above model | first step s | "
             "loss rel. diff vs eager | updates rel. L2 vs eager | accuracy vs fp64 | error |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in results]
    if eager:
        lines += ["", "Speed-up over eager (step time): " + ", ".join(
            f"{r.backend} {eager.step_ms / r.step_ms:.2f}x" for r in results if r.step_ms and r.backend != "eager")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ddp_bench.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # the harness's record keys (workload, batch, backend, status, median_ms) beside the fields above
    recorder = Recorder(out / "ddp_bench.json", environment)
    recorder.put({"workload": f"ddp_{args.model}", "batch": args.batch, "median_ms": r.step_ms,
                  "status": "ok" if r.error is None else ("wrong" if r.accuracy == "fail" else "error"),
                  **asdict(r)} for r in results)
    print("\n".join(lines))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--world", type=int, default=0, help="processes (default: every visible GPU; 2 on a CPU)")
    parser.add_argument("--model", choices=sorted(MODELS), default="vit_b16")
    parser.add_argument("--batch", type=int, default=32, help="images per rank")
    parser.add_argument("--backends", default="eager,inductor,ait", help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--quick", action="store_true", help="two timed steps (smoke test)")


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    if "eager" in args.backends:
        args.backends.remove("eager")
    args.backends.insert(0, "eager")  # first: the reference the others are checked against
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu")
    if args.device == "cpu" and any(b.endswith(("reduce-overhead", "cudagraphs")) for b in args.backends):
        parser.error("CUDA-graph backends need --device cuda")
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    if args.world <= 0:
        args.world = torch.cuda.device_count() if args.device == "cuda" else 2


def execute(args: argparse.Namespace) -> int:
    mp.start_processes(_worker, args=(args.world, _free_port(), args), nprocs=args.world, join=True,
                       start_method="spawn")
    with open(os.path.join(args.out, "ddp_bench.json")) as file:
        results = json.load(file)["results"]
    return 1 if any(r["error"] for r in results) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return cli.parse_args(["ddp", *(argv or [])])[1]


def main(argv: list[str] | None = None) -> int:
    return cli.alias("ddp", argv)


if __name__ == "__main__":
    sys.exit(main())
