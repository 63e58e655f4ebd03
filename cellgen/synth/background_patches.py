"""The space between cells as the microscope records it: real cell-free patches, quilted into a new background.

Measured on GOWT1 (FID of whole frames against GOWT1 02): replacing everything farther than 8 px from an annotated
nucleus of GOWT1 01 by a flat level plus pixel noise raises FID from 88 to 146. Real backgrounds hold out-of-focus
and unannotated nuclei, debris and uneven illumination, which a smooth fitted map leaves out and a segmenter
should learn to ignore (they are not in the ground truth). Cell-free patches of the training frames, lightly
smoothed (the synthetic pixel noise is added afterwards by the fitted noise model) and stored at half resolution,
are tiled with random rotations, mirrors and feathered overlaps.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PATCH_SIZE = 128  # px at full resolution; a few cell diameters on GOWT1, so faint structures fit inside
PATCH_STRIDE = 2  # stored at half resolution: the patches are smooth, and the model stays small
PATCH_SMOOTHING = 1.5  # px: removes the recorded pixel noise before storing (the noise model adds it back)
CELL_MARGIN = 8  # px: a patch keeps this far from every annotated cell (their halo is not background)
PATCHES_PER_FRAME = 4
MAX_PATCHES = 48
MIN_PATCHES = 4  # fewer (a crowded sequence): keep the smooth fitted map instead
TILE_OVERLAP = 0.25  # of a patch, blended with a linear ramp


def patch_size_for(shape: tuple[int, int]) -> int:
    """Patch side (px) for frames of ``shape``: PATCH_SIZE, or a quarter of a small frame's shorter side."""
    return int(min(PATCH_SIZE, min(shape) // 4)) // PATCH_STRIDE * PATCH_STRIDE


def cut_patches(image: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to PATCHES_PER_FRAME smoothed cell-free patches (half resolution, float32) of one frame.

    Args:
        image: (H, W) raw frame.
        inside: (H, W) bool, the annotated cells.
    """
    size = patch_size_for(image.shape)
    if size < 8:
        return []
    near = ndimage.distance_transform_edt(~inside) <= CELL_MARGIN
    # A patch at (y, x) is free when the integral image of ``near`` sums to 0 over it.
    table = np.pad(near.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    hits = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    free = np.argwhere(hits == 0)
    if not len(free):
        return []
    smooth = ndimage.gaussian_filter(image.astype(np.float64), PATCH_SMOOTHING)
    patches = []
    for y, x in free[rng.permutation(len(free))]:
        if len(patches) == PATCHES_PER_FRAME:
            break
        # Patches of one frame should not overlap much, or the bank repeats itself.
        if any(abs(y - py) < size // 2 and abs(x - px) < size // 2 for py, px, _ in patches):
            continue
        patch = smooth[y : y + size : PATCH_STRIDE, x : x + size : PATCH_STRIDE]
        patches.append((y, x, patch.astype(np.float32)))
    return [p for _, _, p in patches]


def quilt(patches: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(height, width) float32 background tiled from ``patches`` (N, P, P) (half resolution).

    Each tile is a random patch, rotated by a multiple of 90 degrees and mirrored at random, upsampled to full
    resolution and blended into its neighbours over ``TILE_OVERLAP`` of its side.
    """
    size = patches.shape[-1] * PATCH_STRIDE
    step = max(1, round(size * (1.0 - TILE_OVERLAP)))
    ramp = np.minimum(np.arange(size) + 1.0, size - np.arange(size)).clip(max=size - step + 1)
    window = np.minimum.outer(ramp, ramp)
    rows, cols = -(-max(height - size, 0) // step) + 1, -(-max(width - size, 0) // step) + 1
    canvas_h, canvas_w = (rows - 1) * step + size, (cols - 1) * step + size
    total = np.zeros((canvas_h, canvas_w))
    weight = np.zeros_like(total)
    for r in range(rows):
        for c in range(cols):
            tile = np.rot90(patches[rng.integers(len(patches))], int(rng.integers(4)))
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            tile = ndimage.zoom(tile, PATCH_STRIDE, order=1, mode="nearest", grid_mode=True)
            total[r * step : r * step + size, c * step : c * step + size] += tile * window
            weight[r * step : r * step + size, c * step : c * step + size] += window
    top, left = (canvas_h - height) // 2, (canvas_w - width) // 2
    window_of = (slice(top, top + height), slice(left, left + width))
    return (total[window_of] / np.maximum(weight[window_of], 1e-9)).astype(np.float32)
