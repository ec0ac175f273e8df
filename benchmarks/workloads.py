"""The benchmark workloads: the seed tables' (and their training steps), and every table gathered.

Adding a workload is one entry in a table: a ``Workload`` (``workload_types.py``) whose ``build``
makes the module and its inputs at a scale. A seed-document workload goes in ``WORKLOADS`` below,
a public model in ``model_suite.py``, a fusion case in ``fusion_cases.py``, a kernel micro case in
``micro/cases.py``. Its ``mode`` says what one step is (``inference``, ``fwd_bwd`` or ``train``),
and that is all the subcommands need: ``run`` times every mode, ``train`` takes the ``train``
ones, ``profile`` any, ``fusion`` and ``micro`` their suites. Nothing else is registered anywhere.

Scales: ``seed`` is the seed documents' shapes and dtypes (the GPU default); ``small`` fits a
2-core CPU in seconds (the CPU default); ``tiny`` is for tests. A workload either sweeps batch sizes
(``batches``: the quick subset run by default, ``full_batches`` the seed table's sweep,
``small_batch`` at the small scale) or has one fixed shape.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.models import EncoderBlock, LoweringModel, SimpleMLP, tutorial_fn
from benchmarks.vit import VIT_B16_224, VIT_L16_384, VitConfig, build_vit
from benchmarks.workload_types import (  # noqa: F401 - Built, SCALES, MODES, fp64_copy: re-exported for callers
    MODES,
    SCALES,
    Built,
    Workload,
    fp64_copy,
    inference_dtype,
    precision_name,
    randn,
    shape_text,
    train_precision,
)

# --- seed 001: the simple MLP -----------------------------------------------------------------

_MLP_HIDDEN = {"seed": 512, "small": 256, "tiny": 16}


def _build_simple_mlp(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    dtype = inference_dtype(device)
    model = SimpleMLP(_MLP_HIDDEN[scale]).to(device, dtype).eval()
    x = randn(batch, _MLP_HIDDEN[scale], device=device, dtype=dtype)
    return Built(model, (x,), "inference", precision_name(dtype), shape_text(x))


# --- seeds 002 and 000: the encoder block, and the lowering model -----------------------------

# (dim, heads, feed-forward, sequence length); seed: fx2ait's 768 / 12 / 3072 on 196 tokens.
_ENCODER_SHAPES = {"seed": (768, 12, 3072, 196), "small": (256, 8, 1024, 64), "tiny": (32, 4, 64, 7)}


def _encoder_parts(cls: type[nn.Module], scale: str, batch: int, device: torch.device, dtype: torch.dtype):
    dim, heads, ff, seq = _ENCODER_SHAPES[scale]
    model = cls(dim, heads, ff).to(device, dtype)
    return model, randn(batch, seq, dim, device=device, dtype=dtype)


def _build_encoder_block(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    dtype = inference_dtype(device)
    model, x = _encoder_parts(EncoderBlock, scale, batch, device, dtype)
    return Built(model.eval(), (x,), "inference", precision_name(dtype), shape_text(x))


def _build_lowering_model(scale: str, batch: int | None, device: torch.device) -> Built:
    """Seed 000: the attention is a function marked ``@ait_dynamo.fallback`` (eager); backend
    ``ait-lower`` splits it as the seed's lowerer does, ``ait`` breaks the graph around it."""
    assert batch is not None
    dtype = inference_dtype(device)
    model, x = _encoder_parts(LoweringModel, scale, batch, device, dtype)
    return Built(model.eval(), (x,), "inference", precision_name(dtype), shape_text(x))


# --- seed 003: ViT-B/16-224 and ViT-L/16-384 --------------------------------------------------

_TINY_VIT = VitConfig(image_size=32, patch_size=16, dim=32, depth=2, heads=2)


def _vit_builder(config: VitConfig) -> Callable[[str, "int | None", torch.device], Built]:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        assert batch is not None
        dtype = inference_dtype(device)
        chosen = _TINY_VIT if scale == "tiny" else config
        model, source = build_vit(chosen, prefer_timm=scale != "tiny")
        model = model.to(device, dtype).eval()
        images = randn(batch, 3, chosen.image_size, chosen.image_size, device=device, dtype=dtype)
        return Built(model, (images,), "inference", precision_name(dtype), shape_text(images), model_source=source)

    return build


# --- seed 004: the AOT Autograd tutorial's function, forward + backward -----------------------


def _tutorial_builder(rows: int, cols: int) -> Callable[[str, "int | None", torch.device], Built]:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        shape = (rows, cols) if scale != "tiny" else (8, 16)
        # The tutorial benchmarks fp32 tensors.
        inputs = tuple(randn(*shape, device=device, dtype=torch.float32, requires_grad=True) for _ in range(4))
        # fused: the forward reads 4 and writes 2 (output, saved sum), the caller's sum reads 1, the
        # backward reads 1 and writes 4
        return Built(tutorial_fn, inputs, "fwd_bwd", "float32", "4 x " + shape_text(inputs[0]),
                     bytes_moved=12 * inputs[0].numel() * 4)

    return build


# --- training steps ---------------------------------------------------------------------------


def _at_least_fp32(out: torch.Tensor) -> torch.Tensor:
    """The loss in fp32 under autocast, and in fp64 for the float64 reference run (``.float()``
    there mixed fp32 logits with fp64 targets: torch 2.11's mse_loss backward refused it)."""
    return out.to(torch.promote_types(out.dtype, torch.float32))


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
            return F.mse_loss(_at_least_fp32(out), target)
        return F.cross_entropy(_at_least_fp32(out), target)


def _build_encoder_train(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    model, x = _encoder_parts(EncoderBlock, scale, batch, device, torch.float32)
    target = torch.randn_like(x)
    return Built(WithLoss(model.train(), "mse"), (x, target), "train", train_precision(device), shape_text(x))


def _build_vit_train(scale: str, batch: int | None, device: torch.device) -> Built:
    assert batch is not None
    config = _TINY_VIT if scale == "tiny" else VIT_B16_224
    model, source = build_vit(config, prefer_timm=scale != "tiny")
    model = model.to(device).train()
    images = randn(batch, 3, config.image_size, config.image_size, device=device, dtype=torch.float32)
    labels = torch.randint(0, config.num_classes, (batch,), device=device)
    return Built(WithLoss(model, "cross_entropy"), (images, labels), "train", train_precision(device),
                 shape_text(images), model_source=source)


_SEED_ENCODER_BATCHES = (1, 4, 16, 32, 64, 128, 256, 512)  # seeds 000 and 002
_SEED_VIT_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # seed 003

# Cheap workloads first: the harness goes round-robin over them, so a time budget cuts the expensive ones.
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("simple_mlp", "001", "inference", "seed 001 PTSimpleModel, hidden 512: linear-gelu-linear-residual-layernorm",
                 _build_simple_mlp, batches=(1024,), full_batches=(1, 16, 128, 1024, 4096), cpu_default=True, small_batch=256),
        Workload("encoder_block", "002", "inference", "seed 002 encoder block, 768 dim / 12 heads / 3072 ff, 196 tokens",
                 _build_encoder_block, batches=(1, 32, 256), full_batches=_SEED_ENCODER_BATCHES, cpu_default=True,
                 small_batch=8),
        Workload("lowering_model", "000", "inference", "seed 000 encoder block with its attention marked to run in eager",
                 _build_lowering_model, batches=(1, 32), full_batches=_SEED_ENCODER_BATCHES, cpu_default=True,
                 small_batch=8),
        Workload("tutorial_1024x2048", "004", "fwd_bwd", "seed 004 (a+b+c+d).cos().cos(), forward + backward",
                 _tutorial_builder(1024, 2048), cpu_default=True),
        Workload("tutorial_8192x8192", "004", "fwd_bwd", "seed 004 (a+b+c+d).cos().cos(), forward + backward",
                 _tutorial_builder(8192, 8192)),
        Workload("vit_b16_224", "003", "inference", "seed 003 ViT-B/16 at 224x224",
                 _vit_builder(VIT_B16_224), batches=(1, 32, 256), full_batches=_SEED_VIT_BATCHES, small_batch=1),
        Workload("encoder_block_train", "002", "train", "training step (MSE loss, SGD) of the seed 002 encoder block",
                 _build_encoder_train, batches=(32,), full_batches=(8, 32, 128), cpu_default=True, small_batch=8),
        Workload("vit_b16_train", "003", "train", "training step (cross-entropy, SGD) of ViT-B/16-224",
                 _build_vit_train, batches=(32,), full_batches=(32, 64, 128)),
        Workload("vit_l16_384", "003", "inference", "seed 003 ViT-L/16 at 384x384",
                 _vit_builder(VIT_L16_384), batches=(1, 16), full_batches=_SEED_VIT_BATCHES, small_batch=1),
    )
}

# The other tables. They import only workload_types, so importing them here closes no cycle.
from benchmarks.fusion_cases import FUSION_WORKLOADS  # noqa: E402 - after the seed table: keeps its order first
from benchmarks.micro.cases import CASES as MICRO_WORKLOADS  # noqa: E402
from benchmarks.model_suite import available, model_workloads  # noqa: E402

for _workload in (*model_workloads(), *FUSION_WORKLOADS, *MICRO_WORKLOADS):
    if _workload.name in WORKLOADS:
        raise ValueError(f"two workloads are named {_workload.name!r}")
    WORKLOADS[_workload.name] = _workload

SUITES = ("seeds", "models", "fusion", "micro", "all")


def default_workloads(device: torch.device, suite: str = "seeds") -> list[str]:
    """The workloads a run takes when none are named: those of ``suite`` (every suite for "all"),
    on a CPU only the cheap seed workloads, and only models whose library is installed."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
    chosen = [name for name, w in WORKLOADS.items() if suite == "all" or w.suite == suite]
    if device.type != "cuda":
        chosen = [name for name in chosen if WORKLOADS[name].suite != "seeds" or WORKLOADS[name].cpu_default]
    return [name for name in chosen if available(name)]
