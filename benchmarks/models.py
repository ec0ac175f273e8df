"""The seed documents' models, written as the seeds write them (PyTorch side)."""

from __future__ import annotations

import torch
from torch import nn

import ait_dynamo


class SimpleMLP(nn.Module):
    """Seed 001 ``PTSimpleModel``: linear → gelu → linear → residual → layer_norm."""

    def __init__(self, hidden: int, eps: float = 1e-5):
        super().__init__()
        self.dense1 = nn.Linear(hidden, 4 * hidden)
        self.act1 = nn.functional.gelu
        self.dense2 = nn.Linear(4 * hidden, hidden)
        self.layernorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dense1(input)
        hidden_states = self.act1(hidden_states)
        hidden_states = self.dense2(hidden_states)
        hidden_states = hidden_states + input
        hidden_states = self.layernorm(hidden_states)
        return hidden_states


class EncoderBlock(nn.Module):
    """Seed 002 transformer encoder block (batch_first attention, ReLU MLP, post-norm)."""

    def __init__(self, input_dim: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim=input_dim, num_heads=num_heads, batch_first=True)
        self.linear_net = nn.Sequential(
            nn.Linear(input_dim, dim_feedforward),
            nn.Dropout(dropout),
            nn.ReLU(inplace=True),
            nn.Linear(dim_feedforward, input_dim),
        )
        self.norm1 = nn.LayerNorm(input_dim)
        self.norm2 = nn.LayerNorm(input_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_out, _ = self.attn(query=x, key=x, value=x)
        x = x + self.dropout(attn_out)
        x = self.norm1(x)
        linear_out = self.linear_net(x)
        x = x + self.dropout(linear_out)
        x = self.norm2(x)
        return x


@ait_dynamo.fallback  # the seed's @torch.fx.wrap: ait leaves this call to PyTorch eager
def unsupported_attention_op(f: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    attn_out, _ = f(x, x, x)
    return attn_out


class LoweringModel(EncoderBlock):
    """Seed 000 ``LowerModule``: the encoder block with attention behind a function marked to run
    in eager, the part AITemplate's lowerer leaves to PyTorch. ``ait_dynamo.lower`` puts it in a
    ``_run_on_gpu_0`` child; under ``torch.compile(backend="ait")`` it is a graph break."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_out = unsupported_attention_op(self.attn, x)
        x = x + self.dropout(attn_out)
        x = self.norm1(x)
        linear_out = self.linear_net(x)
        x = x + self.dropout(linear_out)
        x = self.norm2(x)
        return x


def tutorial_fn(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Seed 004's function: four adds feeding two cosines."""
    x = a + b + c + d
    return x.cos().cos()
