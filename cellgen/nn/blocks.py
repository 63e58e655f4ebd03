"""Convolutional building blocks shared by the 2-D networks (diffusion denoisers, registration, segmentation)."""

from __future__ import annotations

import math
from math import gcd

import torch
import torch.nn.functional as F
from torch import nn


def group_count(channels: int, preferred: int = 8) -> int:
    """Largest group count <= ``preferred`` that divides ``channels`` (GroupNorm needs a divisor)."""
    return gcd(channels, preferred) or 1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion steps (Vaswani et al. 2017; Ho et al. 2020 Sec. 4).

    Args:
        t: (B,) integer or float steps.
        dim: embedding width.

    Returns:
        (B, dim) float32 embedding.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """Sinusoidal step embedding followed by a 2-layer MLP (as in DDPM)."""

    def __init__(self, base: int, dim: int) -> None:
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # in the weights' dtype, so that a float64 model (gradient checks) runs; autocast still casts as usual
        return self.mlp(timestep_embedding(t, self.base).to(self.mlp[0].weight.dtype))


class ResBlock2d(nn.Module):
    """GroupNorm-SiLU-Conv residual block with optional FiLM-style (scale, shift) step conditioning."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * out_channels) if time_dim else None
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.time is not None and emb is not None:
            scale, shift = self.time(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, through ``scaled_dot_product_attention``."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))
