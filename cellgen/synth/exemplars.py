"""Real cell textures re-shaped onto synthetic masks: the ``exemplar`` texture source.

Measured on GOWT1 (FID of whole frames against GOWT1 02): replacing the inside of every real nucleus of GOWT1 01 by
its mean plus shot noise raises FID from 88 to 244, so at the scale a frame is seen by FID (and by a segmenter at
half resolution) the texture inside the cells is most of what makes a frame look real: nucleoli, chromatin
domains, a dimmer rim. A statistical texture (correlated Gaussian fields) or a DDPM trained on a CPU budget does
not reproduce it. Here each real training cell's texture is stored in normalised polar coordinates (angle, depth
from the centre relative to the boundary radius at that angle), which is independent of the cell's shape and
size, and painted onto a synthetic mask by the same map, with a random rotation and mirror. It is the exemplar
idea of copy-paste augmentation, but on new shapes, new layouts and new motion: the masks, lineage and brightness
still come from the fitted shape model.

Fitting works on whole frames (NumPy in, float lists out, so the bank lives in a checkpoint); painting runs
batched in torch on the pipeline's local crops.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cellgen.flow.radial import boundary_radii, centroids, offsets_from, radius_at

EXEMPLAR_ANGLES = 64  # polar samples around a cell
EXEMPLAR_RADII = 24  # polar samples from the centre (depth 0) to the boundary (depth 1)
EXEMPLAR_SMOOTHING = 1.0  # px: a light blur before sampling, so the stored texture is not mostly pixel noise
MAX_EXEMPLARS = 256  # kept in the model (256 x 64 x 24 floats, ~1.5 MB)
MIN_EXEMPLAR_AREA = 50  # px: smaller labels are fragments, not cells
MIN_LOG_SPREAD = 0.05  # log units: below this spread a feature is treated as constant
NEIGHBOURS = 8  # a synthetic cell takes one of the 8 exemplars nearest in size and brightness


def polar_textures(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The polar relative textures of every whole cell of one frame.

    Args:
        image: (H, W) raw frame.
        labels: (H, W) whole-cell label image (0: background).

    Returns:
        ``textures`` (N, EXEMPLAR_RADII, EXEMPLAR_ANGLES) float32, each cell's intensity relative to its mean, and
        ``cells`` (N, 2): area (px) and mean raw intensity. Cells cut by the frame border are left out (their
        outline there is the border's, not the cell's).
    """
    values = ndimage.gaussian_filter(image.astype(np.float64), EXEMPLAR_SMOOTHING)
    raw = image.astype(np.float64)
    crops, masks, cells = [], [], []
    h, w = labels.shape
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        ys, xs = box
        if ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w:
            continue
        mask = labels[box] == index
        area = int(mask.sum())
        if area < MIN_EXEMPLAR_AREA:
            continue
        mean = float(raw[box][mask].mean())
        if mean <= 0:
            continue
        crops.append(values[box] / mean)
        masks.append(mask)
        cells.append((area, mean))
    if not crops:
        return np.empty((0, EXEMPLAR_RADII, EXEMPLAR_ANGLES), np.float32), np.empty((0, 2))
    size = max(max(c.shape) for c in crops) + 2
    rel = torch.zeros(len(crops), 1, size, size, dtype=torch.float32)
    inside = torch.zeros_like(rel)
    for i, (crop, mask) in enumerate(zip(crops, masks, strict=True)):
        rel[i, 0, 1 : 1 + crop.shape[0], 1 : 1 + crop.shape[1]] = torch.from_numpy(crop)
        inside[i, 0, 1 : 1 + mask.shape[0], 1 : 1 + mask.shape[1]] = torch.from_numpy(mask)
    centres = centroids(inside)
    radii = boundary_radii(inside, centres, EXEMPLAR_ANGLES)  # (N, A)
    depth = (torch.arange(EXEMPLAR_RADII, dtype=torch.float32) + 0.5) / EXEMPLAR_RADII
    theta = torch.arange(EXEMPLAR_ANGLES, dtype=torch.float32) * (2 * math.pi / EXEMPLAR_ANGLES)
    reach = depth[None, :, None] * radii[:, None, :]  # (N, R, A)
    x = centres[:, 0, None, None] + reach * torch.cos(theta)
    y = centres[:, 1, None, None] + reach * torch.sin(theta)
    grid = torch.stack([2 * x / (size - 1) - 1, 2 * y / (size - 1) - 1], dim=-1)
    polar = F.grid_sample(rel, grid, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]
    return polar.numpy().astype(np.float32), np.asarray(cells, np.float64)


def choose_exemplars(
    cells: np.ndarray, areas: torch.Tensor, brightness: torch.Tensor, generators: list[torch.Generator]
) -> torch.Tensor:
    """Index of the exemplar each synthetic cell takes: one of the ``NEIGHBOURS`` nearest in log-area and
    log-brightness (a small dim nucleus should not wear the texture of a large bright one), drawn with the cell's
    own generator so the choice does not depend on batching.

    Args:
        cells: (N, 2) exemplar area and mean raw intensity.
        areas: (B,) target areas (px); brightness: (B,) target mean raw intensity.
    """
    features = np.log(np.maximum(cells, 1e-6))
    # A feature that hardly varies in the bank (one brightness everywhere) must not decide by rounding noise.
    scale = np.maximum(features.std(0), MIN_LOG_SPREAD)
    bank = torch.as_tensor(features / scale, dtype=torch.float64)
    target = torch.stack([areas.double().cpu().clamp_min(1e-6).log(), brightness.double().cpu().clamp_min(1e-6).log()])
    target = target.T / torch.as_tensor(scale, dtype=torch.float64)
    distance = torch.cdist(target, bank)  # (B, N)
    k = min(NEIGHBOURS, bank.shape[0])
    nearest = distance.topk(k, dim=1, largest=False).indices
    picks = [int(torch.randint(k, (1,), generator=g, device=g.device).item()) for g in generators]
    return nearest[torch.arange(len(picks)), torch.tensor(picks)]


def paint_exemplars(
    masks: torch.Tensor, polar: torch.Tensor, rotation: torch.Tensor, mirror: torch.Tensor
) -> torch.Tensor:
    """Relative textures (B, 1, S, S) (mean about 1 inside each mask) of polar exemplars mapped onto ``masks``.

    A pixel at angle theta and distance r from the mask's centroid takes the exemplar's value at the same
    relative depth ``r / R(theta)`` (R: the mask's boundary radius at theta) and at angle ``+-theta + rotation``.
    Outside the mask the exemplar's rim is continued (depth clamped to 1).

    Args:
        masks: (B, 1, S, S) binary masks.
        polar: (B, EXEMPLAR_RADII, EXEMPLAR_ANGLES) relative textures.
        rotation: (B,) radians; mirror: (B,) bool, reflect the exemplar.
    """
    _, _, h, w = masks.shape
    masks = masks.float()
    n_radii, n_angles = polar.shape[1:]
    centres = centroids(masks)
    radii = boundary_radii(masks, centres, n_angles)
    dx, dy = offsets_from(centres, h, w)
    theta = torch.atan2(dy, dx)
    depth = torch.sqrt(dx**2 + dy**2) / radius_at(radii, theta).clamp_min(1e-3)
    sign = torch.where(mirror, -1.0, 1.0).to(theta)[:, None, None]
    source = torch.remainder(sign * theta + rotation.to(theta)[:, None, None], 2 * math.pi)
    column = source * (n_angles / (2 * math.pi))  # in [0, A): the wrap column A repeats column 0
    row = (depth * n_radii - 0.5).clamp(0, n_radii - 1)
    wrapped = torch.cat([polar, polar[:, :, :1]], dim=2)[:, None].float()  # (B, 1, R, A + 1)
    grid = torch.stack([2 * column / n_angles - 1, 2 * row / max(n_radii - 1, 1) - 1], dim=-1)
    return F.grid_sample(wrapped, grid, mode="bilinear", padding_mode="border", align_corners=True)
