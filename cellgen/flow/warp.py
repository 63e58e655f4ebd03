"""Dense backward warping by a displacement field, and diffeomorphic integration of velocity fields."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=16)
def _identity_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, H, W, 2) normalised (x, y) coordinates of every pixel for ``grid_sample(align_corners=True)``."""
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype) if h > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype) if w > 1 else torch.zeros(1, device=device)
    grid_y, grid_x = torch.meshgrid(ys.to(dtype), xs.to(dtype), indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)[None]


def warp_by_flow(
    image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """Backward-warp images: ``out(p) = image(p + flow(p))`` (VoxelMorph's SpatialTransformer convention).

    Args:
        image: (B, C, H, W) images.
        flow: (B, 2, H, W) displacement in pixels; channel 0 is x (columns), 1 is y (rows).
        mode: ``grid_sample`` interpolation (``"bilinear"`` or ``"nearest"`` for label masks).
        padding_mode: value for samples outside the image (``"zeros"``, ``"border"``, ``"reflection"``).

    Returns:
        (B, C, H, W) warped images; zero flow gives the input back up to float rounding.
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        shapes = f"{tuple(image.shape)} and {tuple(flow.shape)}"
        raise ValueError(f"expected image (B, C, H, W) and flow (B, 2, H, W), got {shapes}")
    if flow.shape[0] != image.shape[0] or flow.shape[2:] != image.shape[2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    h, w = image.shape[-2:]
    # with align_corners=True the pixel centres -1 and +1 are W-1 (H-1) pixels apart
    scale = flow.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    grid = _identity_grid(h, w, flow.device, flow.dtype) + flow.permute(0, 2, 3, 1) * scale
    grid = grid.to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7, padding_mode: str = "border") -> torch.Tensor:
    """Displacement of a stationary velocity field by scaling and squaring (Dalca et al. 2019, Sec. 3.2).

    ``v / 2**steps`` is composed with itself ``steps`` times (``v = v + warp(v, v)``), giving a smooth,
    invertible displacement (VoxelMorph's VecInt; 7 steps is its default).

    Args:
        velocity: (B, 2, H, W) velocity in pixels, channels (x, y).
        steps: squaring steps; 0 returns the velocity itself.
        padding_mode: ``"border"`` extends the field past the edge, so a constant field integrates to itself
            everywhere (VoxelMorph samples zeros there, which shrinks displacements at the border).

    Returns:
        (B, 2, H, W) displacement in pixels.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    disp = velocity / 2**steps
    for _ in range(steps):
        disp = disp + warp_by_flow(disp, disp, padding_mode=padding_mode)
    return disp
