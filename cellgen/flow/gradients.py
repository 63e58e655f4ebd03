"""Image gradients for optical flow: the normalised 3x3 Sobel operator (through kornia)."""

from __future__ import annotations

import numpy as np
import torch
from kornia.filters import spatial_gradient

# Sobel kernels divided by 8 (the sum of their absolute weights): a unit-slope ramp has gradient 1.
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
SOBEL_Y = SOBEL_X.T.copy()


def sobel_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial derivatives of single-channel images with the normalised Sobel operator.

    kornia's ``spatial_gradient(mode="sobel", normalized=True)`` correlates with ``SOBEL_X`` / ``SOBEL_Y`` and
    replicates the border, so a ramp of slope 1 gives 1 inside (and 1/2 on the first and last pixel).

    Args:
        images: (N, 1, H, W) float images.

    Returns:
        Ix (positive where brightness rises rightward) and Iy (rising downward), each (N, 1, H, W).
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    grad = spatial_gradient(images, mode="sobel", normalized=True)  # (N, 1, 2, H, W)
    return grad[:, :, 0], grad[:, :, 1]
