"""What a benchmark workload is: the ``Workload`` table entry and the ``Built`` case it builds.

Every table of workloads (the seeds' in ``workloads.py``, the real models in ``model_suite.py``,
the fusion cases in ``fusion_cases.py``, the micro cases in ``micro/cases.py``) is made of these
entries, and every subcommand of ``python -m benchmarks`` runs them through one harness
(``harness.py``). This module imports none of the tables: they import it, and ``workloads.py``
gathers them into ``WORKLOADS`` (were the types in ``workloads.py``, a table imported first would
meet a half-initialised ``workloads`` module).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

SCALES = ("seed", "small", "tiny")
# inference: the module under torch.no_grad; fwd_bwd: the function, then out.sum().backward() (or
# out.backward(grad_output)) into its inputs; train: forward with the loss, backward, SGD update
MODES = ("inference", "fwd_bwd", "train")


@dataclass
class Built:
    """One workload at one batch size, ready for the backends to compile."""

    module: Callable[..., Any]  # nn.Module or plain function: what every backend compiles
    inputs: tuple[torch.Tensor, ...]
    mode: str
    precision: str  # "float16", "float32", "bfloat16" or "amp-bfloat16" (fp32 weights, bf16 autocast)
    input_desc: str
    ait_options: dict[str, Any] = field(default_factory=dict)
    model_source: str = "in-repo"
    # fwd_bwd: the gradient fed to out.backward(); None = out.sum().backward() (seed 004's way)
    grad_output: torch.Tensor | None = None
    # least bytes a fused implementation reads and writes per step: the tables show GB/s from it
    bytes_moved: int | None = None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "amp-bfloat16" else None


BuildFn = Callable[[str, "int | None", torch.device], Built]  # (scale, batch, device) → Built


@dataclass(frozen=True)
class Workload:
    """One table entry. ``build(scale, batch, device)`` makes the case; nothing else is needed for
    every subcommand to run it (which ones take it follows from ``suite`` and ``mode``)."""

    name: str
    seed: str  # the seed document the workload comes from ("suite", "fusion", "micro" for the others)
    mode: str  # one of MODES
    description: str
    build: BuildFn
    batches: tuple[int, ...] = ()  # quick default sweep at the seed scale; () = one fixed shape
    full_batches: tuple[int, ...] = ()  # --sweep full
    cpu_default: bool = False  # seeds suite: part of the CPU default run (ait against eager, under a minute)
    suite: str = "seeds"  # seeds, models, fusion or micro
    small_batch: int = 2  # the one batch size of the `small` scale

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"workload {self.name!r}: mode {self.mode!r} is not one of {', '.join(MODES)}")

    @property
    def batched(self) -> bool:
        return bool(self.batches)

    def batches_for(self, scale: str, sweep: str) -> tuple[int | None, ...]:
        if not self.batched:
            return (None,)
        if scale != "seed":
            return (self.small_batch if scale == "small" else 2,)
        return self.full_batches if sweep == "full" else self.batches


def inference_dtype(device: torch.device) -> torch.dtype:
    # The seed tables are fp16 on the GPU; fp16 matmuls on a CPU are slow and unusual, so fp32 there.
    return torch.float16 if device.type == "cuda" else torch.float32


def train_precision(device: torch.device) -> str:
    # Mixed precision on the GPU (fp32 weights and optimizer, bf16 matmuls); plain fp32 on a CPU.
    return "amp-bfloat16" if device.type == "cuda" else "float32"


def precision_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def randn(*shape: int, device: torch.device, dtype: torch.dtype, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype, requires_grad=requires_grad)


def shape_text(tensor: torch.Tensor) -> str:
    return "x".join(str(s) for s in tensor.shape)


def _double(x: torch.Tensor) -> torch.Tensor:
    return x.detach().double().requires_grad_(x.requires_grad) if x.is_floating_point() else x


def fp64_copy(built: Built) -> Built | None:
    """The workload in float64, the accuracy reference (``None`` where the module cannot be
    converted): weights and floating inputs in float64, integer inputs (token ids, labels) as they are."""
    module = built.module
    if isinstance(module, nn.Module):
        try:
            module = copy.deepcopy(module).double()
        except Exception:  # noqa: BLE001 - a module that does not copy or convert has no reference
            return None
    grad = None if built.grad_output is None else _double(built.grad_output)
    return replace(built, module=module, inputs=tuple(_double(x) for x in built.inputs), precision="float64",
                   ait_options={}, grad_output=grad)
