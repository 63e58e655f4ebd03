"""Flow between two star-shaped masks from their boundary radii: exact, smooth and fold-free.

The synthetic cells of BVDM are star-shaped around their origin (the shape model draws radial profiles), and in a
cell's local frame motion and rotation are already removed, so what is left between two frames is growth and
deformation. Mapping each pixel along its ray by the ratio of the two boundary radii at its angle carries a
texture from one mask onto the other with no learned component: zero flow for equal masks, no shear, no folds.
A learned flow (VoxelMorph, the paper's FPM) trained on a CPU budget has pixel-scale errors that, composed over
tens of frames, smear a carried texture into radial streaks; this map is the robust default for carrying textures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ANGLES = 64
RADIAL_STEP = 0.5  # px between samples along a ray


def centroids(masks: torch.Tensor) -> torch.Tensor:
    """(B, 2) centroids (x, y) in pixels of (B, 1, H, W) masks (the crop centre for an empty mask)."""
    b, _, h, w = masks.shape
    ys = torch.arange(h, dtype=masks.dtype, device=masks.device)
    xs = torch.arange(w, dtype=masks.dtype, device=masks.device)
    area = masks.flatten(1).sum(1)
    cx = (masks[:, 0].sum(1) * xs).sum(1) / area.clamp_min(1e-6)
    cy = (masks[:, 0].sum(2) * ys).sum(1) / area.clamp_min(1e-6)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=masks.dtype, device=masks.device)
    out = torch.stack([cx, cy], dim=1)
    return torch.where(area[:, None] > 0, out, centre)


def boundary_radii(masks: torch.Tensor, centres: torch.Tensor, angles: int = ANGLES) -> torch.Tensor:
    """(B, A) distance from each centre to the mask's boundary along ``angles`` evenly spaced rays.

    The radius of a ray is its last sample inside the mask (a star-shaped mask has one crossing per ray).
    """
    b, _, h, w = masks.shape
    reach = 0.5 * math.hypot(h, w)
    radii = torch.arange(0.0, reach, RADIAL_STEP, dtype=masks.dtype, device=masks.device)
    theta = torch.arange(angles, dtype=masks.dtype, device=masks.device) * (2 * math.pi / angles)
    x = centres[:, 0, None, None] + radii[None, None, :] * torch.cos(theta)[None, :, None]
    y = centres[:, 1, None, None] + radii[None, None, :] * torch.sin(theta)[None, :, None]
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)  # (B, A, R, 2)
    inside = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0] > 0.5
    index = torch.arange(radii.numel(), device=masks.device)
    last = torch.where(inside, index, torch.zeros_like(index)).amax(dim=-1)
    return (radii[last] + 0.5 * RADIAL_STEP).clamp_min(RADIAL_STEP)


def offsets_from(centres: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W) x and y offsets of every pixel of an H x W grid from each of the (B, 2) centres (x, y)."""
    ys = torch.arange(h, dtype=centres.dtype, device=centres.device)
    xs = torch.arange(w, dtype=centres.dtype, device=centres.device)
    dx = xs[None, None, :] - centres[:, 0, None, None]
    dy = ys[None, :, None] - centres[:, 1, None, None]
    return dx.expand(-1, h, w), dy.expand(-1, h, w)


def radius_at(radii: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of (B, A) boundary radii at angles ``theta`` (B, H, W) in radians."""
    angles = radii.shape[1]
    pos = torch.remainder(theta, 2 * math.pi) * (angles / (2 * math.pi))
    low = pos.floor().long() % angles
    frac = pos - pos.floor()
    high = (low + 1) % angles
    gather = lambda idx: torch.gather(radii, 1, idx.flatten(1)).view_as(theta)  # noqa: E731
    return gather(low) * (1 - frac) + gather(high) * frac


class RadialMaskFlow:
    """Implements the synthesis pipeline's flow protocol: ``flow_between(source, target)`` -> (B, 2, H, W).

    ``out(p) = source(p + flow(p))`` (:func:`cellgen.flow.warp_by_flow`): a target pixel at angle theta and distance
    r from the target's centroid samples the source at the same angle and distance ``r * R_s(theta) / R_t(theta)``
    from the source's centroid.
    """

    def __init__(self, angles: int = ANGLES) -> None:
        self.angles = angles

    @torch.no_grad()
    def flow_between(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        source, target = source.float(), target.float()
        _, _, h, w = target.shape
        c_src, c_tgt = centroids(source), centroids(target)
        r_src = boundary_radii(source, c_src, self.angles)
        r_tgt = boundary_radii(target, c_tgt, self.angles)
        dx, dy = offsets_from(c_tgt, h, w)
        theta = torch.atan2(dy, dx)
        scale = radius_at(r_src, theta) / radius_at(r_tgt, theta)
        src_x = c_src[:, 0, None, None] + scale * dx
        src_y = c_src[:, 1, None, None] + scale * dy
        return torch.stack([src_x - c_tgt[:, 0, None, None] - dx, src_y - c_tgt[:, 1, None, None] - dy], dim=1)
