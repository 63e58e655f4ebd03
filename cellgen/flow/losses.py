"""Regularisers for dense displacement fields (registration and flow prediction)."""

from __future__ import annotations

import torch


def flow_smoothness_loss(flow: torch.Tensor, penalty: str = "l2") -> torch.Tensor:
    """Mean penalty on forward differences in x and y (VoxelMorph's ``Grad`` loss, Balakrishnan et al. 2019).

    Args:
        flow: (B, 2, H, W) or (B, 2, T, H, W) displacement; differences are taken over the last two axes.
        penalty: ``"l2"`` (squared differences, VoxelMorph's default) or ``"l1"`` (absolute differences).

    Returns:
        Scalar: the average of the x and y means; 0 for a constant field.
    """
    if flow.ndim < 3:
        raise ValueError(f"flow must have at least (B, H, W) axes, got shape {tuple(flow.shape)}")
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    if penalty == "l2":
        dx, dy = dx * dx, dy * dy
    else:
        dx, dy = dx.abs(), dy.abs()
    return 0.5 * (dx.mean() + dy.mean())
