"""Small building blocks shared by the ViTs."""

from __future__ import annotations

import torch
from torch import nn


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v on [B, heads, N, d] tensors (`bias` broadcast to [B, heads, N, N]).

    Written out instead of `scaled_dot_product_attention` so every converter sees MatMul + Softmax, the
    ops they all support; numerically it is the same computation.
    """
    scale = q.shape[-1] ** -0.5
    attn = torch.matmul(q * scale, k.transpose(-2, -1))
    if bias is not None:
        attn = attn + bias
    return torch.matmul(attn.softmax(dim=-1), v)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, H*d] -> [B, H, N, d]."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d] -> [B, N, H*d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x), used by FaRL."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)
