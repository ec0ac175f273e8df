"""The benchmark workloads, one per seed table (and the training steps), at three scales.

``seed`` is the seed documents' shapes and dtypes (the GPU default); ``small`` fits a 2-core CPU in
seconds (the CPU default); ``tiny`` is for tests. A workload either sweeps batch sizes (``batches``:
the quick subset run by default, ``full_batches`` the seed table's sweep) or has one fixed shape.

Modes: ``inference`` runs the model under ``torch.no_grad``; ``fwd_bwd`` runs the function and
backpropagates ``out.sum()`` into its inputs (seed 004's benchmark); ``train`` is one training step:
forward with the loss, backward, SGD update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.models import EncoderBlock, LoweringModel, SimpleMLP, tutorial_fn
from benchmarks.vit import VIT_B16_224, VIT_L16_384, VitConfig, build_vit

SCALES = ("seed", "small", "tiny")
MODES = ("inference", "fwd_bwd", "train")


@dataclass
class Built:
    """One workload at one batch size, ready for the backends to compile."""

    module: Callable[..., Any]  # nn.Module or plain function: what every backend compiles
    inputs: tuple[torch.Tensor, ...]
    mode: str
    precision: str  # "float16", "float32" or "amp-bfloat16" (fp32 weights, bf16 autocast)
    input_desc: str
    ait_options: dict[str, Any] = field(default_factory=dict)
    model_source: str = "in-repo"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "amp-bfloat16" else None


@dataclass(frozen=True)
class Workload:
    name: str
    seed: str  # seed document id the workload comes from
    mode: str
    description: str
    build: Callable[[str, "int | None", torch.device], Built]
    batches: tuple[int, ...] = ()  # quick default sweep on the GPU; () = one fixed shape
    full_batches: tuple[int, ...] = ()
    cpu_default: bool = False  # part of the CPU default run (ait against eager, under a minute)
    suite: str = "seeds"  # "seeds" (the seed documents' workloads) or "models" (benchmarks/model_suite.py)

    @property
    def batched(self) -> bool:
        return bool(self.batches)

    def batches_for(self, scale: str, sweep: str) -> tuple[int | None, ...]:
        if not self.batched:
            return (None,)
        if scale != "seed":
            return (_SMALL_BATCH.get(self.name, 2) if scale == "small" else 2,)
        return self.full_batches if sweep == "full" else self.batches


def _inference_dtype(device: torch.device) -> torch.dtype:
    # The seed tables are fp16 on the GPU; fp16 matmuls on a CPU are slow and unusual, so fp32 there.
    return torch.float16 if device.type == "cuda" else torch.float32


def _precision_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(*shape: int, device: torch.device, dtype: torch.dtype, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype, requires_grad=requires_grad)


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(s) for s in tensor.shape)


# --- seed 001: the simple MLP -----------------------------------------------------------------

_MLP_HIDDEN = {"seed": 512, "small": 256, "tiny": 16}


def _build_simple_mlp(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    dtype = _inference_dtype(device)
    model = SimpleMLP(_MLP_HIDDEN[scale]).to(device, dtype).eval()
    x = _randn(batch, _MLP_HIDDEN[scale], device=device, dtype=dtype)
    return Built(model, (x,), "inference", _precision_name(dtype), _shape(x))


# --- seeds 002 and 000: the encoder block, and the lowering model -----------------------------

# (dim, heads, feed-forward, sequence length); seed: fx2ait's 768 / 12 / 3072 on 196 tokens.
_ENCODER_SHAPES = {"seed": (768, 12, 3072, 196), "small": (256, 8, 1024, 64), "tiny": (32, 4, 64, 7)}


def _encoder_parts(cls: type[nn.Module], scale: str, batch: int, device: torch.device, dtype: torch.dtype):
    dim, heads, ff, seq = _ENCODER_SHAPES[scale]
    model = cls(dim, heads, ff).to(device, dtype)
    return model, _randn(batch, seq, dim, device=device, dtype=dtype)


def _build_encoder_block(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    dtype = _inference_dtype(device)
    model, x = _encoder_parts(EncoderBlock, scale, batch, device, dtype)
    return Built(model.eval(), (x,), "inference", _precision_name(dtype), _shape(x))


def _build_lowering_model(scale: str, batch: int | None, device: torch.device) -> Built:
    """Seed 000: the attention is a function marked ``@ait_dynamo.fallback`` (eager); backend
    ``ait-lower`` splits it as the seed's lowerer does, ``ait`` breaks the graph around it."""
    assert batch is not None
    dtype = _inference_dtype(device)
    model, x = _encoder_parts(LoweringModel, scale, batch, device, dtype)
    return Built(model.eval(), (x,), "inference", _precision_name(dtype), _shape(x))


# --- seed 003: ViT-B/16-224 and ViT-L/16-384 --------------------------------------------------

_TINY_VIT = VitConfig(image_size=32, patch_size=16, dim=32, depth=2, heads=2)


def _vit_builder(config: VitConfig) -> Callable[[str, "int | None", torch.device], Built]:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        assert batch is not None
        dtype = _inference_dtype(device)
        chosen = _TINY_VIT if scale == "tiny" else config
        model, source = build_vit(chosen, prefer_timm=scale != "tiny")
        model = model.to(device, dtype).eval()
        images = _randn(batch, 3, chosen.image_size, chosen.image_size, device=device, dtype=dtype)
        return Built(model, (images,), "inference", _precision_name(dtype), _shape(images), model_source=source)

    return build


# --- seed 004: the AOT Autograd tutorial's function, forward + backward -----------------------


def _tutorial_builder(rows: int, cols: int) -> Callable[[str, "int | None", torch.device], Built]:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        shape = (rows, cols) if scale != "tiny" else (8, 16)
        # The tutorial benchmarks fp32 tensors.
        inputs = tuple(_randn(*shape, device=device, dtype=torch.float32, requires_grad=True) for _ in range(4))
        return Built(tutorial_fn, inputs, "fwd_bwd", "float32", "4 x " + _shape(inputs[0]))

    return build


# --- training steps ---------------------------------------------------------------------------


class WithLoss(nn.Module):
    """``model`` followed by its loss, so that one compiled graph holds the forward and the loss."""

    def __init__(self, model: nn.Module, loss: str):
        super().__init__()
        if loss not in ("mse", "cross_entropy"):
            raise ValueError(f"WithLoss: loss must be 'mse' or 'cross_entropy', got {loss!r}")
        self.model = model
        self.loss = loss

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.loss == "mse":
            return F.mse_loss(out.float(), target)
        return F.cross_entropy(out.float(), target)


def _train_precision(device: torch.device) -> str:
    # Mixed precision on the GPU (fp32 weights and optimizer, bf16 matmuls); plain fp32 on a CPU.
    return "amp-bfloat16" if device.type == "cuda" else "float32"


def _build_encoder_train(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    model, x = _encoder_parts(EncoderBlock, scale, batch, device, torch.float32)
    target = torch.randn_like(x)
    return Built(WithLoss(model.train(), "mse"), (x, target), "train", _train_precision(device), _shape(x))


def _build_vit_train(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    config = _TINY_VIT if scale == "tiny" else VIT_B16_224
    model, source = build_vit(config, prefer_timm=scale != "tiny")
    model = model.to(device).train()
    images = _randn(batch, 3, config.image_size, config.image_size, device=device, dtype=torch.float32)
    labels = torch.randint(0, config.num_classes, (batch,), device=device)
    return Built(WithLoss(model, "cross_entropy"), (images, labels), "train", _train_precision(device),
                 _shape(images), model_source=source)


_SEED_ENCODER_BATCHES = (1, 4, 16, 32, 64, 128, 256, 512)  # seeds 000 and 002
_SEED_VIT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # seed 003

# Cheap workloads first: `benchmarks.run` goes round-robin over them, so a time budget cuts the expensive ones.
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("simple_mlp", "001", "inference", "seed 001 PTSimpleModel, hidden 512: linear-gelu-linear-residual-layernorm",
                 _build_simple_mlp, batches=(1024,), full_batches=(1, 16, 128, 1024, 4096), cpu_default=True),
        Workload("encoder_block", "002", "inference", "seed 002 encoder block, 768 dim / 12 heads / 3072 ff, 196 tokens",
                 _build_encoder_block, batches=(1, 32, 256), full_batches=_SEED_ENCODER_BATCHES, cpu_default=True),
        Workload("lowering_model", "000", "inference", "seed 000 encoder block with its attention marked to run in eager",
                 _build_lowering_model, batches=(1, 32), full_batches=_SEED_ENCODER_BATCHES, cpu_default=True),
        Workload("tutorial_1024x2048", "004", "fwd_bwd", "seed 004 (a+b+c+d).cos().cos(), forward + backward",
                 _tutorial_builder(1024, 2048), cpu_default=True),
        Workload("tutorial_8192x8192", "004", "fwd_bwd", "seed 004 (a+b+c+d).cos().cos(), forward + backward",
                 _tutorial_builder(8192, 8192)),
        Workload("vit_b16_224", "003", "inference", "seed 003 ViT-B/16 at 224x224",
                 _vit_builder(VIT_B16_224), batches=(1, 32, 256), full_batches=_SEED_VIT_BATCHES),
        Workload("encoder_block_train", "002", "train", "training step (MSE loss, SGD) of the seed 002 encoder block",
                 _build_encoder_train, batches=(32,), full_batches=(8, 32, 128), cpu_default=True),
        Workload("vit_b16_train", "003", "train", "training step (cross-entropy, SGD) of ViT-B/16-224",
                 _build_vit_train, batches=(32,), full_batches=(32, 64, 128)),
        Workload("vit_l16_384", "003", "inference", "seed 003 ViT-L/16 at 384x384",
                 _vit_builder(VIT_L16_384), batches=(1, 16), full_batches=_SEED_VIT_BATCHES),
    )
}

# One batch per workload at the `small` scale: enough work to time, a few seconds on 2 CPU cores.
_SMALL_BATCH = {"simple_mlp": 256, "encoder_block": 8, "lowering_model": 8, "vit_b16_224": 1, "vit_l16_384": 1,
                "encoder_block_train": 8, "vit_b16_train": 2}
assert set(_SMALL_BATCH) == {w.name for w in WORKLOADS.values() if w.batched}

SUITES = ("seeds", "models", "all")


def _register_model_suite() -> None:
    from benchmarks.model_suite import model_workloads

    WORKLOADS.update({w.name: w for w in model_workloads()})


_register_model_suite()


def fp64_copy(built: Built) -> Built | None:
    """The workload in float64, the accuracy reference (``None`` where the module cannot be
    converted): weights and floating inputs in float64, integer inputs (token ids, labels) as they are."""
    module = built.module
    if isinstance(module, nn.Module):
        try:
            module = copy.deepcopy(module).double()
        except Exception:  # noqa: BLE001 - a module that does not copy or convert has no reference
            return None
    inputs = tuple(x.detach().double().requires_grad_(x.requires_grad) if x.is_floating_point() else x
                   for x in built.inputs)
    return Built(module, inputs, built.mode, "float64", built.input_desc, model_source=built.model_source)


def default_workloads(device: torch.device, suite: str = "seeds") -> list[str]:
    """The workloads a run takes when none are named: the seed workloads (the cheap ones on a
    CPU), the model suite (those whose library is installed), or both."""
    from benchmarks.model_suite import available

    chosen = [name for name, w in WORKLOADS.items() if suite == "all" or w.suite == suite]
    if device.type != "cuda":
        chosen = [name for name in chosen if WORKLOADS[name].suite == "models" or WORKLOADS[name].cpu_default]
    return [name for name in chosen if available(name)]
