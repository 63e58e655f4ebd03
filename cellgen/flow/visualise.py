"""Colour-wheel rendering of flow fields for previews."""

from __future__ import annotations

import math

import numpy as np
import torch
from kornia.color import hsv_to_rgb


def flow_to_color(flow: torch.Tensor | np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Render flow as RGB: hue is the direction, saturation the magnitude (white means no motion).

    Args:
        flow: (2, H, W) or (B, 2, H, W) flow, channels (U, V) with y pointing down.
        max_magnitude: magnitude shown fully saturated; default the largest in ``flow``, so every frame of a
            video passed at once shares one scale.

    Returns:
        uint8 array (H, W, 3) or (B, H, W, 3), ready for ``write_gif``.
    """
    flow = torch.as_tensor(flow).detach().float().cpu()
    if flow.ndim not in (3, 4) or flow.shape[-3] != 2:
        raise ValueError(f"flow must be (2, H, W) or (B, 2, H, W), got {tuple(flow.shape)}")
    single = flow.ndim == 3
    if single:
        flow = flow[None]
    u, v = flow[:, 0], flow[:, 1]
    magnitude = torch.sqrt(u**2 + v**2)
    top = float(magnitude.max()) if max_magnitude is None else float(max_magnitude)
    hue = torch.remainder(torch.atan2(v, u), 2 * math.pi)
    saturation = (magnitude / top).clamp(0, 1) if top > 0 else torch.zeros_like(magnitude)
    hsv = torch.stack([hue, saturation, torch.ones_like(hue)], dim=1)
    rgb = (hsv_to_rgb(hsv).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return rgb[0] if single else rgb
