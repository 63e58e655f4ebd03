"""Fréchet Video Distance (Unterthiner et al., 2018) of grey microscopy videos with the Kinetics-400 I3D.

As in the reference implementation: 16-frame clips, each frame resized bilinearly to 224x224 on the
8-bit scale, mapped to [-1, 1], the 400-d I3D logits as features, and the Fréchet distance between
Gaussians fitted to them (:func:`cellgen.metrics.frechet.frechet_distance`, stable for the
rank-deficient covariances that a few dozen clips give).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.metrics.frechet import ArrayLike, frechet_distance_of_features
from cellgen.metrics.i3d import load_i3d

CLIP_FRAMES = 16
CLIP_SIZE = 224


def videos_to_i3d_input(videos: ArrayLike, frames: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> torch.Tensor:
    """Grey videos (N, T, H, W) -> I3D clips (N, 3, frames, size, size) in [-1, 1].

    Float input is read as [0, 1] and uint8 as [0, 255]; both go to the 8-bit scale first, as FVD is
    defined on 8-bit video. The first ``frames`` frames are used; a shorter video is padded by repeating
    its last frame (a still ending, not invented motion).
    """
    x = torch.as_tensor(videos)
    if x.ndim != 4:
        raise ValueError(f"expected grey videos (N, T, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"expected uint8 or float videos in [0, 1], got {x.dtype}; normalise first")
    x = x.float() if x.dtype == torch.uint8 else (x.float().clamp(0, 1) * 255).round()
    if x.shape[1] >= frames:
        x = x[:, :frames]
    else:
        x = torch.cat([x, x[:, -1:].expand(-1, frames - x.shape[1], -1, -1)], dim=1)
    n, t, h, w = x.shape
    if (h, w) != (size, size):
        x = F.interpolate(x.reshape(n * t, 1, h, w), size=(size, size), mode="bilinear", align_corners=False)
        x = x.reshape(n, t, size, size)
    return (x / 127.5 - 1.0).unsqueeze(1).expand(-1, 3, -1, -1, -1)


def i3d_logits(videos: ArrayLike, model: nn.Module, batch_size: int = 4) -> torch.Tensor:
    """(N, T, H, W) grey videos -> (N, 400) I3D logits, a few clips at a time to bound memory."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(videos), batch_size):
            clips = videos_to_i3d_input(videos[start : start + batch_size]).to(device)
            out.append(model(clips).double().cpu())
    return torch.cat(out)


def compute_fvd(
    real_videos: ArrayLike,
    fake_videos: ArrayLike,
    batch_size: int = 4,
    model: nn.Module | None = None,
) -> float:
    """FVD between two sets of grey videos (N, T, H, W) in [0, 1] (or uint8), N >= 2 each.

    Raises:
        WeightsUnavailable: "FVD unavailable: <why>" when the I3D checkpoint is missing or altered.
    """
    if len(real_videos) < 2 or len(fake_videos) < 2:
        raise ValueError(f"FVD needs >= 2 videos per set, got {len(real_videos)} and {len(fake_videos)}")
    model = model if model is not None else load_i3d()
    return frechet_distance_of_features(
        i3d_logits(real_videos, model, batch_size), i3d_logits(fake_videos, model, batch_size)
    )
