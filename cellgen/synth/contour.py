"""Radial contour descriptor of a cell mask and its inverse, a filled star polygon.

BVDM (Yilmaz et al. 2024, arXiv:2403.17808) textures synthetic masks "generated based on real data statistics";
the statistics here are those of the boundary radius at fixed angles around the centroid, measured from the
long axis, to which :mod:`cellgen.synth.shape_model` fits a point-distribution model. This module is
the geometry only: mask -> radii, radii -> mask, and the symmetries of the descriptor.

Conventions (image coordinates, rows ``y`` down, columns ``x`` right):

* ``angle`` of the long axis is measured from ``+x`` towards ``+y`` in ``(-pi/2, pi/2]``. It equals
  ``-(regionprops.orientation + pi/2)`` wrapped into that range.
* ``radii[k]`` is the boundary distance along the direction ``angle + 2*pi*k/K``; ``k = 0`` points along the
  long axis. Where the radial function is multivalued (a ray leaves and re-enters the cell) the outermost
  crossing is kept, so the polygon is the cell's star hull about its centroid.
* The boundary is the 0.5 level of the bilinearly interpolated mask (the pixel edge between inside and outside
  pixel centres), so that a polygon drawn through it covers the same pixel centres again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class RadialProfile:
    """Descriptor of one cell: ``radii`` (K,) in pixels, centroid ``(y, x)``, long-axis ``angle`` (rad)."""

    radii: np.ndarray
    centroid: tuple[float, float]
    angle: float
    area: int
    aspect: float  # sqrt of the ratio of the second-moment eigenvalues (1 for a disk)


def moments(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float, float]:
    """Centroid ``(y, x)``, long-axis angle and aspect ratio of a pixel set from its second moments."""
    cy, cx = float(ys.mean()), float(xs.mean())
    dy, dx = ys - cy, xs - cx
    cxx, cyy, cxy = float((dx * dx).mean()), float((dy * dy).mean()), float((dx * dy).mean())
    angle = 0.5 * float(np.arctan2(2.0 * cxy, cxx - cyy))
    half_trace, root = 0.5 * (cxx + cyy), float(np.hypot(0.5 * (cxx - cyy), cxy))
    major, minor = half_trace + root, half_trace - root
    aspect = float(np.sqrt((major + 1.0 / 12) / (minor + 1.0 / 12)))  # +1/12: a pixel's own variance
    return cy, cx, angle, aspect


def radial_profile(mask: np.ndarray, n_angles: int = 64, step: float = 0.25) -> RadialProfile:
    """Boundary radius at ``n_angles`` fixed angles from the long axis of a single-cell mask.

    All rays are sampled at once (``n_angles x R`` bilinear look-ups), so the cost does not depend on a
    Python loop over pixels or angles.

    Args:
        mask: (H, W) bool, one cell (any crop that contains it).
        n_angles: K, even so that the 180-degree flip is a roll by K/2.
        step: radial sampling step in pixels before the sub-sample 0.5-crossing is interpolated.
    """
    if n_angles < 4 or n_angles % 2:
        raise ValueError(f"n_angles must be an even number >= 4, got {n_angles}")
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("radial_profile needs a non-empty mask")
    cy, cx, angle, aspect = moments(ys, xs)
    reach = float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max())) + 2.0
    y0, x0 = ys.min() - 2, xs.min() - 2
    window = np.zeros((ys.max() - y0 + 3, xs.max() - x0 + 3), np.float32)
    window[ys - y0, xs - x0] = 1.0
    r = np.arange(0.0, reach + 2 * step, step)
    phi = angle + 2.0 * np.pi * np.arange(n_angles) / n_angles
    sample_y = (cy - y0) + np.sin(phi)[:, None] * r[None, :]
    sample_x = (cx - x0) + np.cos(phi)[:, None] * r[None, :]
    values = ndimage.map_coordinates(window, [sample_y, sample_x], order=1, mode="constant", cval=0.0)
    inside = values >= 0.5
    last = r.size - 1 - np.argmax(inside[:, ::-1], axis=1)  # outermost inside sample per ray
    rows = np.arange(n_angles)
    v0, v1 = values[rows, last], values[rows, np.minimum(last + 1, r.size - 1)]
    frac = np.clip((v0 - 0.5) / np.maximum(v0 - v1, 1e-6), 0.0, 1.0)
    radii = np.where(inside.any(axis=1), r[last] + step * frac, step)
    return RadialProfile(np.maximum(radii, step), (cy, cx), angle, int(ys.size), aspect)


# --------------------------------------------------------------------------------------------- symmetries


def symmetry_indices(n_angles: int) -> np.ndarray:
    """(4, K) index maps of the descriptor's ambiguities: identity, 180-degree flip, mirror, both.

    The long axis has no head or tail and a mask no handedness, so these four profiles describe the same
    cell up to a rigid motion.
    """
    k = np.arange(n_angles)
    half = n_angles // 2
    return np.stack([k, (k + half) % n_angles, (-k) % n_angles, (half - k) % n_angles])


def canonical_profiles(profiles: np.ndarray) -> np.ndarray:
    """Pick one of the four equivalent orderings per row so that PCA sees aligned shapes.

    The fuller end of the long axis goes to ``k = 0`` and the fuller side to ``0 < angle < pi``; generation
    mirrors shapes at random, so the canonical choice biases nothing.

    Args:
        profiles: (N, K) radii or log-radii.
    """
    profiles = np.atleast_2d(np.asarray(profiles, np.float64))
    n_angles = profiles.shape[1]
    sym = symmetry_indices(n_angles)
    quarter = n_angles // 4
    front = np.r_[np.arange(n_angles - quarter, n_angles), np.arange(0, quarter)]
    flip = profiles[:, front].sum(1) < profiles[:, sym[1][front]].sum(1)
    out = np.where(flip[:, None], profiles[:, sym[1]], profiles)
    half = n_angles // 2
    mirror = out[:, 1:half].sum(1) < out[:, half + 1 :].sum(1)
    return np.where(mirror[:, None], out[:, sym[2]], out)


def aligned_sq_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance between profile rows ``a`` and ``b`` under the best of the four symmetries of ``b``."""
    sym = symmetry_indices(a.shape[-1])
    d = ((a[:, None, :] - b[:, sym]) ** 2).sum(-1)  # (N, 4)
    return d.min(1)


def profile_aspect(radii: np.ndarray) -> float:
    """Length along the long axis over the width across it, read off a radial profile (K,)."""
    n_angles = radii.shape[-1]
    q = n_angles // 4
    return float((radii[0] + radii[2 * q]) / max(radii[q] + radii[3 * q], 1e-6))


# --------------------------------------------------------------------------------------------- rendering


def polygon_area(radii: np.ndarray) -> np.ndarray:
    """Area of the star polygon through ``radii`` (..., K) at equal angles (shoelace on consecutive spokes)."""
    n_angles = radii.shape[-1]
    return 0.5 * np.sin(2.0 * np.pi / n_angles) * (radii * np.roll(radii, -1, axis=-1)).sum(-1)


def polygon_vertices(radii: np.ndarray, y: float, x: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex rows and columns of the star polygon centred at ``(y, x)`` with its k = 0 spoke at ``angle``."""
    phi = angle + 2.0 * np.pi * np.arange(radii.shape[-1]) / radii.shape[-1]
    return y + radii * np.sin(phi), x + radii * np.cos(phi)


def polygon_pixels(radii: np.ndarray, y: float, x: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Unclipped pixel rows and columns whose centres lie inside the star polygon (may be negative).

    A star polygon is convex within each sector between two spokes, so a pixel is inside when it is nearer to
    the centre than the straight edge of its sector along the same ray. That is a handful of array operations
    over the bounding box (several times faster than a general scan-line fill for 64-gons).
    """
    radii = np.asarray(radii, np.float64)
    n_angles = radii.size
    reach = float(radii.max())
    y0, x0 = math.floor(y - reach), math.floor(x - reach)
    yy, xx = np.mgrid[y0 : math.ceil(y + reach) + 1, x0 : math.ceil(x + reach) + 1]
    dy, dx = yy - y, xx - x
    sector = ((np.arctan2(dy, dx) - angle) % (2.0 * np.pi)) * (n_angles / (2.0 * np.pi))
    k = np.minimum(sector.astype(np.int64), n_angles - 1)
    frac = sector - k
    r0, r1 = radii[k], radii[(k + 1) % n_angles]
    delta = 2.0 * np.pi / n_angles
    # Distance along the ray to the edge through spokes k and k + 1 (polar equation of a line).
    edge = r0 * r1 * math.sin(delta) / (r0 * np.sin(frac * delta) + r1 * np.sin((1.0 - frac) * delta))
    inside = dy * dy + dx * dx < edge * edge
    return yy[inside], xx[inside]


def render_local(radii: np.ndarray, crop: int) -> np.ndarray:
    """(crop, crop) bool mask of a profile centred in its local crop frame, long axis along local x.

    The local origin is the crop centre ``((crop - 1) / 2, (crop - 1) / 2)``.
    """
    centre = (crop - 1) / 2.0
    rr, cc = polygon_pixels(radii, centre, centre, 0.0)
    keep = (rr >= 0) & (rr < crop) & (cc >= 0) & (cc < crop)
    mask = np.zeros((crop, crop), bool)
    mask[rr[keep], cc[keep]] = True
    return mask
