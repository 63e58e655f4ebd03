"""Brightness statistics of a training sequence, and a background and noise that match them.

BVDM pastes per-cell textures from the texture DDPM into a scene (Yilmaz et al. 2024, arXiv:2403.17808); the space
between cells must look like the training background, so its mean level, slow variation and pixel noise are
measured on pixels far from any annotated cell.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

BACKGROUND_MARGIN = 8  # px from the nearest cell before a pixel counts as background (halo, blur, missed rim)


@dataclass(frozen=True)
class IntensityStats:
    """Fitted intensities in the raw image's units (``dtype``; clip to ``[0, max_value]`` when storing)."""

    cell_mean: float  # mean over cells of the per-cell mean intensity
    cell_mean_std: float  # spread of that per-cell mean across cells
    cell_std: float  # mean within-cell standard deviation (texture + noise)
    background_mean: float
    background_std: float  # all background variation (slow + noise)
    background_smooth_std: float  # slow part: sqrt(background_std^2 - noise_std^2)
    noise_std: float  # pixel noise, from differences of neighbouring background pixels
    dtype: str
    max_value: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IntensityStats:
        return cls(**{k: (str(v) if k == "dtype" else float(v)) for k, v in data.items()})


class IntensityAccumulator:
    """Pools per-frame sums so that statistics over many large frames never hold more than one frame."""

    def __init__(self) -> None:
        self.cell_means: list[np.ndarray] = []
        self.cell_stds: list[np.ndarray] = []
        self.bg = np.zeros(3)  # count, sum, sum of squares
        self.diff = np.zeros(2)  # count, sum of squares of neighbour differences
        self.dtype: np.dtype | None = None
        self.observed_max = 0.0

    def add(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Add one raw frame (H, W) and its instance mask (H, W)."""
        self.dtype = image.dtype
        self.observed_max = max(self.observed_max, float(image.max()))
        values = image.astype(np.float64)
        inside = mask > 0
        if inside.any():
            ids = mask[inside].astype(np.int64)
            count = np.bincount(ids)
            present = count > 0
            mean = np.bincount(ids, values[inside])[present] / count[present]
            mean_sq = np.bincount(ids, values[inside] ** 2)[present] / count[present]
            self.cell_means.append(mean)
            self.cell_stds.append(np.sqrt(np.maximum(mean_sq - mean**2, 0.0)))
        far = ndimage.distance_transform_edt(mask == 0) > BACKGROUND_MARGIN
        bg = values[far]
        self.bg += (bg.size, bg.sum(), (bg**2).sum())
        both = far[:, 1:] & far[:, :-1]
        d = (values[:, 1:] - values[:, :-1])[both]
        self.diff += (d.size, (d**2).sum())

    def result(self) -> IntensityStats:
        if self.dtype is None:
            raise ValueError("no frames were added")
        means = np.concatenate(self.cell_means) if self.cell_means else np.zeros(1)
        stds = np.concatenate(self.cell_stds) if self.cell_stds else np.zeros(1)
        n, s, ss = self.bg
        bg_mean = s / max(n, 1)
        bg_std = float(np.sqrt(max(ss / max(n, 1) - bg_mean**2, 0.0)))
        noise = float(np.sqrt(self.diff[1] / max(self.diff[0], 1) / 2.0))  # Var(a - b) = 2 sigma^2
        noise = min(noise, bg_std) if bg_std > 0 else noise
        max_value = float(np.iinfo(self.dtype).max) if np.issubdtype(self.dtype, np.integer) else self.observed_max
        return IntensityStats(
            cell_mean=float(means.mean()),
            cell_mean_std=float(means.std()),
            cell_std=float(stds.mean()),
            background_mean=float(bg_mean),
            background_std=bg_std,
            background_smooth_std=float(np.sqrt(max(bg_std**2 - noise**2, 0.0))),
            noise_std=noise,
            dtype=str(self.dtype),
            max_value=max_value,
        )


def background_image(
    rng: np.random.Generator, stats: IntensityStats, height: int, width: int, scale: float | None = None
) -> np.ndarray:
    """Noise-free background (H, W) float32: the fitted mean plus a slow random field of the fitted slow std.

    Args:
        scale: smoothing length of the slow field in px; default ``max(H, W) / 8`` (illumination varies over
            a fraction of the field, not pixel to pixel).
    """
    field = rng.standard_normal((height, width))
    field = ndimage.gaussian_filter(field, scale or max(height, width) / 8.0, mode="wrap")
    field = (field - field.mean()) / max(float(field.std()), 1e-12)  # exact fitted mean and slow std per image
    return (stats.background_mean + stats.background_smooth_std * field).astype(np.float32)


def add_noise(image: np.ndarray, stats: IntensityStats, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian pixel noise of the fitted std and clip to the stored range; returns float32 (H, W)."""
    noisy = np.asarray(image, np.float64) + rng.normal(0.0, stats.noise_std, np.shape(image))
    return np.clip(noisy, 0.0, stats.max_value).astype(np.float32)
