"""Vision Transformers for seed 003: timm's model when timm is installed, else an in-repo ViT with
the same shapes (patch embedding, class token, learned position embedding, pre-norm blocks with
fused-qkv attention through ``scaled_dot_product_attention`` and a GELU MLP, final norm, head).

The in-repo model has the layer structure and parameter shapes of timm's
``vit_base_patch16_224`` / ``vit_large_patch16_384`` (random weights: the benchmark measures
speed and checks compiled against eager, it does not classify images).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class VitConfig:
    image_size: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    timm_name: str | None = None  # the timm model with these shapes, if any

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


VIT_B16_224 = VitConfig(224, 16, 768, 12, 12, timm_name="vit_base_patch16_224")
VIT_L16_384 = VitConfig(384, 16, 1024, 24, 16, timm_name="vit_large_patch16_384")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"ViT: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT for image classification: ``(batch, 3, H, W)`` → ``(batch, num_classes)`` logits."""

    def __init__(self, config: VitConfig):
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(f"ViT: image size {config.image_size} is not a multiple of patch {config.patch_size}")
        self.config = config
        self.patch_embed = nn.Conv2d(3, config.dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.tokens, config.dim))
        self.blocks = nn.Sequential(*(Block(config.dim, config.heads, config.mlp_ratio) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Small weights keep activations in fp16 range through 24 random blocks.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def build_vit(config: VitConfig, prefer_timm: bool = True) -> tuple[nn.Module, str]:
    """The model and where it came from: ``"timm"`` (random weights, no download) or ``"in-repo"``."""
    if prefer_timm and config.timm_name is not None:
        try:
            import timm  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            return timm.create_model(config.timm_name, pretrained=False), "timm"
    return VisionTransformer(config), "in-repo"
