"""The real-model suite: public architectures built from code, random weights, nothing downloaded.

- torchvision: resnet50, mobilenet_v3_large, efficientnet_b0, convnext_tiny, swin_t, vit_b_16
  (images 224 x 224, batch 32 at the seed scale);
- Hugging Face ``transformers`` from configs: BERT-base, GPT-2 (with its LM head, vocabulary
  50257: an odd GEMM N), a T5-small encoder and a small Llama (grouped-query attention), batch 8
  of 128 tokens at the seed scale. Attention is the library's "eager" implementation (matmul,
  softmax, matmul), which is what ``passes/attention.py`` rewrites; Inductor gets the same model.

Each model runs as inference (fp16 on CUDA, fp32 on a CPU) and as a training step (loss,
backward, SGD; bf16 autocast on CUDA; dropout off, so that every backend computes the same
function and can be checked against eager). ``python -m benchmarks run --suite models``. torchvision
and transformers are optional: a model whose library is missing is left out with a note (both
are on the GPU machine; CI installs transformers and runs the suite on tiny configs).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.workload_types import Built, Workload, inference_dtype, precision_name, shape_text, train_precision

TORCHVISION_MODELS = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "swin_t", "vit_b_16")
HF_MODELS = ("bert_base", "gpt2", "t5_small_encoder", "llama_small")

_IMAGE = {"seed": 224, "small": 64, "tiny": 32}
_TOKENS = {"seed": 128, "small": 32, "tiny": 16}


def library_of(workload_name: str) -> str | None:
    """The optional library a suite workload needs (``None`` for the seed workloads)."""
    if workload_name.startswith("tv_"):
        return "torchvision"
    if workload_name.startswith("hf_"):
        return "transformers"
    return None


def available(workload_name: str) -> bool:
    library = library_of(workload_name)
    return library is None or importlib.util.find_spec(library) is not None


# --- torchvision ---------------------------------------------------------------------------------


def _torchvision_model(name: str, scale: str) -> nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None}
    if name == "vit_b_16" and scale != "seed":
        kwargs["image_size"] = _IMAGE[scale]  # ViT's position embedding is sized for its image
    return getattr(torchvision.models, name)(**kwargs)


class _ClassifierLoss(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(images).float(), labels)


def _torchvision_builder(name: str, train: bool) -> Callable[[str, "int | None", torch.device], Built]:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        assert batch is not None
        model = _torchvision_model(name, scale)
        size = _IMAGE[scale] if not (name == "swin_t" and scale == "tiny") else 64  # swin's windows need 64+
        if train:
            images = torch.randn(batch, 3, size, size, device=device)
            labels = torch.randint(0, 1000, (batch,), device=device)
            return Built(_ClassifierLoss(_without_dropout(model).to(device).train()), (images, labels), "train",
                         train_precision(device),
                         shape_text(images), model_source=f"torchvision.models.{name}")
        dtype = inference_dtype(device)
        images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        return Built(model.to(device, dtype).eval(), (images,), "inference", precision_name(dtype), shape_text(images),
                     model_source=f"torchvision.models.{name}")

    return build


# --- Hugging Face transformers -------------------------------------------------------------------

_ROOT = Path(__file__).resolve().parent.parent


def import_transformers() -> Any:
    """``transformers``, with the Hugging Face Hub's ``kernels`` package (if installed) imported
    first under its own name. transformers 5.25 imports ``kernels`` where the package is installed
    (it came with it in CI on 2026-12-03). Run from this repository's root (``python -m ...``
    puts the root first on ``sys.path``), this repository's ``kernels/`` folder, the sources of
    ``ait_dynamo.kernels``, was found under that name instead: "cannot import name
    'CUDAProperties' from 'kernels'". So the Hub's package is imported with the root out of the
    path. Once it is in ``sys.modules``, later imports of ``kernels`` get it."""
    if "kernels" not in sys.modules:
        saved = sys.path[:]
        sys.path[:] = [entry for entry in saved if Path(entry or ".").resolve() != _ROOT]
        try:
            importlib.import_module("kernels")
        except ImportError:
            pass  # not installed: transformers does without it
        finally:
            sys.path[:] = saved
    return importlib.import_module("transformers")


def _hf_config(family: str, scale: str) -> Any:
    transformers = import_transformers()

    tiny = scale != "seed"
    width, layers = (32, 2) if scale == "tiny" else (128, 2)
    if family == "bert_base":
        if tiny:
            return transformers.BertConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                                           intermediate_size=4 * width, vocab_size=1000)
        return transformers.BertConfig()  # 768 / 12 layers / 12 heads / 3072
    if family == "gpt2":
        if tiny:
            return transformers.GPT2Config(n_embd=width, n_layer=layers, n_head=4, vocab_size=1001)
        return transformers.GPT2Config()  # 124M, vocabulary 50257
    if family == "t5_small_encoder":
        if tiny:
            return transformers.T5Config(d_model=width, d_kv=width // 4, d_ff=4 * width, num_layers=layers,
                                         num_heads=4, vocab_size=1000)
        return transformers.T5Config()  # t5-small: 512 / 6 layers / 8 heads / 2048
    if family == "llama_small":
        if tiny:
            return transformers.LlamaConfig(hidden_size=width, intermediate_size=3 * width, num_hidden_layers=layers,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)
        return transformers.LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                                        num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                                        max_position_embeddings=2048)
    raise ValueError(f"unknown Hugging Face family {family!r}")


def _without_dropout(model: nn.Module) -> nn.Module:
    """Training steps run without dropout, so that every backend computes the same function and
    can be checked against eager (Inductor's dropout draws other numbers than eager's)."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return model


def _hf_model(family: str, scale: str, train: bool) -> nn.Module:
    transformers = import_transformers()

    config = _hf_config(family, scale)
    config._attn_implementation = "eager"  # matmul-softmax-matmul, as written in the model's code
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                 "dropout_rate", "attention_dropout", "classifier_dropout"):
        if hasattr(config, name) and getattr(config, name) is not None:
            setattr(config, name, 0.0)  # see _without_dropout
    classes = {
        "bert_base": (transformers.BertModel, transformers.BertForMaskedLM),
        "gpt2": (transformers.GPT2LMHeadModel, transformers.GPT2LMHeadModel),
        "t5_small_encoder": (transformers.T5EncoderModel, transformers.T5EncoderModel),
        "llama_small": (transformers.LlamaForCausalLM, transformers.LlamaForCausalLM),
    }
    return classes[family][train](config)


class _HFInference(nn.Module):
    """``model(input_ids)`` → its main tensor (logits of a language model, else the last hidden state)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids)
        return out.logits if hasattr(out, "logits") and out.logits is not None else out.last_hidden_state


class _HFTrain(nn.Module):
    """The model's own loss where it has one (masked / causal LM), else the mean square of the hidden states."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "lm_head") or hasattr(self.model, "cls"):
            return self.model(input_ids=input_ids, labels=labels).loss
        return self.model(input_ids=input_ids).last_hidden_state.float().pow(2).mean()


def _hf_builder(family: str, train: bool) -> Callable[[str, "int | None", torch.device], Built]:
    def build(scale: str, batch: int | None, device: torch.device) -> Built:
        assert batch is not None
        model = _hf_model(family, scale, train)
        vocab = model.config.vocab_size
        tokens = _TOKENS[scale]
        ids = torch.randint(0, vocab, (batch, tokens), device=device)
        source = f"transformers {type(model).__name__} ({family})"
        if train:
            labels = torch.randint(0, vocab, (batch, tokens), device=device)
            return Built(_HFTrain(model.to(device).train()), (ids, labels), "train", train_precision(device),
                         f"{batch}x{tokens} tokens", model_source=source)
        dtype = inference_dtype(device)
        return Built(_HFInference(model.to(device, dtype).eval()), (ids,), "inference", precision_name(dtype),
                     f"{batch}x{tokens} tokens", model_source=source)

    return build


def model_workloads() -> list[Workload]:
    """The suite's table: each model twice (inference, training step). A new model is one more
    name in ``TORCHVISION_MODELS`` (any ``torchvision.models`` builder) or ``HF_MODELS`` (with its
    configs in ``_hf_config`` and its class in ``_hf_model``)."""
    workloads = []
    for name in TORCHVISION_MODELS:
        for train in (False, True):
            workloads.append(Workload(
                f"tv_{name}{'_train' if train else ''}", "suite", "train" if train else "inference",
                f"torchvision {name}, random weights, {'training step (cross-entropy, SGD)' if train else 'inference'}",
                _torchvision_builder(name, train), batches=(32,), full_batches=(1, 32, 128), suite="models"))
    for family in HF_MODELS:
        for train in (False, True):
            workloads.append(Workload(
                f"hf_{family}{'_train' if train else ''}", "suite", "train" if train else "inference",
                f"transformers {family} from its config, eager attention, "
                f"{'training step (its loss, SGD)' if train else 'inference'}",
                _hf_builder(family, train), batches=(8,), full_batches=(1, 8, 32), suite="models"))
    return workloads
