"""Exponential moving average of network weights, the sampling weights of every diffusion model."""

from __future__ import annotations

import torch
from torch import nn


def warmed_up_decay(max_decay: float, updates: int) -> float:
    """``min(max_decay, (1 + n) / (10 + n))`` after ``n`` updates: short runs still sample from useful weights."""
    return min(float(max_decay), (1.0 + updates) / (10.0 + updates))


@torch.no_grad()
def update_ema(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * live`` for parameters (one fused foreach op); buffers are copied."""
    ema_params, live_params = list(ema.parameters()), [p.detach() for p in live.parameters()]
    torch._foreach_lerp_(ema_params, live_params, 1.0 - decay)
    for b_ema, b_live in zip(ema.buffers(), live.buffers(), strict=True):
        b_ema.copy_(b_live)
