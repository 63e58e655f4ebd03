"""How cells and the space between them look in the training data: fitted, then drawn per synthetic cell.

BVDM's shape model "captures the geometries and average brightness of cells" (Yilmaz et al. 2024, Sec. 2).
Painting every mask with one value (the paper's 0.588) makes every synthetic nucleus equally bright, and a
segmenter trained on such data misses the dim nuclei of real data (GOWT1: per-cell means from barely above the
background to saturation). Everything here is measured on the training frames with whole-cell masks
(:mod:`cellgen.data.cell_extent`), in the raw image's units:

* brightness: the distribution of per-cell mean intensity (quantile table), its Gaussian-copula correlation with
  cell size, and the lag-1 correlation of a track's brightness from frame to frame (slow change over time);
* texture: the mean radial brightness profile (rim to centre), the texture contrast that is not pixel noise,
  and its grain (correlation length), which give the statistical texture a classical simulator would paint
  (MitoGen-like) and the start image of SDEdit;
* the microscope: a slow background map and a Poisson-Gaussian noise model ``var = gain * mean + offset``
  (Foi et al. 2008), fitted on neighbouring-pixel differences binned by local brightness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage, signal, special

from cellgen.synth.background_patches import MAX_PATCHES, MIN_PATCHES, cut_patches, quilt
from cellgen.synth.exemplars import EXEMPLAR_ANGLES, EXEMPLAR_RADII, MAX_EXEMPLARS, polar_textures

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 65)
PROFILE_BINS = 8  # depth bins from the rim (0) to the centre (1) of a cell
BACKGROUND_GRID = 16  # the slow background map is kept at 16 x 16
NOISE_BINS = 24
BACKGROUND_MARGIN = 8  # px from the nearest cell before a pixel counts as background
COARSE_DIVISOR = 5.0  # the coarse texture's scale: a cell's equivalent radius / 5
HALO_PX = 8  # px outside a mask over which a cell's halo is measured
MAX_GRAIN = 8.0  # px; a texture correlation length beyond this is shading, not texture


@dataclass(frozen=True)
class CellAppearance:
    """Fitted appearance statistics, raw intensity units (plain floats and lists, so it lives in a checkpoint).

    Attributes:
        brightness_quantiles: (Q,) quantiles of the per-cell mean intensity at ``QUANTILE_LEVELS``.
        size_correlation: correlation of the normal scores of brightness and log-area (same cell-frame).
        temporal_correlation: lag-1 correlation of a track's brightness normal score between frames.
        radial_profile: (PROFILE_BINS,) mean intensity at each depth bin relative to the cell's mean.
        texture_contrast: within-cell std not explained by noise or the profile, relative to the cell mean.
        texture_grain: Gaussian correlation length (px) of that texture.
        noise_gain: Poisson part of the pixel noise variance (per raw unit of mean).
        noise_offset: Gaussian part of the pixel noise variance (raw units squared).
        background_map: (G, G) slow background (raw units), flattened row-major.
        background_mean: mean of ``background_map``.
        halo_profile: (HALO_PX,) how much of a cell's contrast over the background is left 1, 2, ... px outside
            its mask (optical blur, and annotations drawn inside the visible edge); 0 beyond.
        coarse_quantiles: (Q,) quantiles, at ``QUANTILE_LEVELS``, of the within-cell texture smoothed at
            ``coarse_sigma`` (relative to the cell mean): structures of a tenth of a cell and more (nucleoli,
            chromatin domains), with their skew (dark nucleoli give a long negative tail). Without them a
            segmenter trained on synthetic cells reads a real nucleolus as the gap between two cells.
        coarse_sigma: Gaussian scale (px) of that component: the median cell's equivalent radius / 5.
        exemplar_textures: (N, EXEMPLAR_RADII * EXEMPLAR_ANGLES) real cells' textures relative to their mean, in
            normalised polar coordinates (:mod:`cellgen.synth.exemplars`), for ``texture="exemplar"``.
        exemplar_cells: (N, 2) each exemplar's area (px) and mean raw intensity.
        background_patches: (N, P * P) cell-free patches of the training frames (raw units, smoothed, half
            resolution, :mod:`cellgen.synth.background_patches`); when present the background is quilted from them.
    """

    brightness_quantiles: list[float]
    size_correlation: float
    temporal_correlation: float
    radial_profile: list[float]
    texture_contrast: float
    texture_grain: float
    noise_gain: float
    noise_offset: float
    background_map: list[float]
    background_mean: float
    halo_profile: list[float] | None = None  # older models: none (a sharp rim)
    coarse_quantiles: list[float] | None = None  # older models: none (one grain only)
    coarse_sigma: float | None = None
    exemplar_textures: list[list[float]] | None = None  # older models: none (no exemplar texture)
    exemplar_cells: list[list[float]] | None = None
    background_patches: list[list[float]] | None = None  # older models and crowded data: the smooth map

    def to_dict(self) -> dict:
        return asdict(self)

    @cached_property
    def exemplar_bank(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The exemplars as arrays, (N, R, A) textures and (N, 2) cells, converted once per model, not per frame."""
        if not self.exemplar_textures or not self.exemplar_cells:
            return None
        polar = np.asarray(self.exemplar_textures, np.float32)
        return polar.reshape(len(polar), EXEMPLAR_RADII, EXEMPLAR_ANGLES), np.asarray(self.exemplar_cells, np.float64)

    @classmethod
    def from_dict(cls, data: dict) -> CellAppearance:
        return cls(**data)

    # ----------------------------------------------------------------------------------------- sampling

    def brightness_at(self, z: np.ndarray | float) -> np.ndarray:
        """Per-cell mean intensity at normal score(s) ``z`` (the fitted marginal via the quantile table)."""
        return np.interp(special.ndtr(np.asarray(z, np.float64)), QUANTILE_LEVELS, self.brightness_quantiles)

    def brightness_scores(
        self, rng: np.random.Generator, length: int, size_score: float, start: float | None = None
    ) -> np.ndarray:
        """(length,) normal scores of one track's brightness: an AR(1) series, stationary N(0, 1).

        Args:
            size_score: the track's log-area normal score; the first score correlates with it as fitted.
            start: score of the frame before the first (a daughter continues her mother); None: a new track.
        """
        rho = float(np.clip(self.temporal_correlation, 0.0, 0.999))
        step = np.sqrt(1.0 - rho**2)
        if start is None:
            r = float(np.clip(self.size_correlation, -0.99, 0.99))
            first = r * size_score + np.sqrt(1.0 - r**2) * rng.standard_normal()
        else:
            first = rho * start + step * rng.standard_normal()
        # x[i] = rho * x[i-1] + step * e[i], started at ``first``: one IIR filter instead of a Python loop.
        innovations = np.concatenate([[first], step * rng.standard_normal(length - 1)])
        return signal.lfilter([1.0], [1.0, -rho], innovations)

    def background(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """(H, W) float32 background: quilted from the real cell-free patches when the model has them, else the
        fitted slow map, randomly flipped, resized to the field."""
        if self.background_patches:
            patches = np.asarray(self.background_patches, np.float32)
            side = int(round(np.sqrt(patches.shape[1])))
            return quilt(patches.reshape(-1, side, side), rng, height, width)
        grid = np.asarray(self.background_map, np.float64).reshape(BACKGROUND_GRID, BACKGROUND_GRID)
        if rng.random() < 0.5:
            grid = grid[::-1]
        if rng.random() < 0.5:
            grid = grid[:, ::-1]
        zoom = (height / grid.shape[0], width / grid.shape[1])
        return ndimage.zoom(grid, zoom, order=1, mode="nearest", grid_mode=True).astype(np.float32)

    def composite(self, background: np.ndarray, cells: np.ndarray, inside: np.ndarray) -> np.ndarray:
        """(H, W) noise-free frame: ``cells`` inside the masks, the fitted halo around them, background beyond.

        Outside a mask each pixel takes ``halo(d)`` of its nearest cell's local contrast over the background
        (d: distance to that cell in px), so a cell's edge falls off as it does in the training data instead of
        ending in a step that a segmenter would learn to look for.
        """
        frame = np.where(inside, cells, background).astype(np.float64)
        if not self.halo_profile or not inside.any() or inside.all():
            return frame
        halo = np.asarray(self.halo_profile, np.float64)
        # The rim value each outside pixel continues: the cells' intensity smoothed within the masks.
        weight = ndimage.gaussian_filter(inside.astype(np.float64), 1.5)
        rim = ndimage.gaussian_filter(np.where(inside, cells, 0.0), 1.5) / np.maximum(weight, 1e-6)
        dist, (iy, ix) = ndimage.distance_transform_edt(~inside, return_indices=True)
        alpha = np.interp(dist, np.arange(halo.size + 1, dtype=np.float64), np.concatenate([[1.0], halo]), right=0.0)
        outside = ~inside & (alpha > 0)
        frame[outside] += alpha[outside] * (rim[iy, ix][outside] - background[outside])
        return frame

    def noise_std(self, image: np.ndarray) -> np.ndarray:
        """Pixel noise std at each pixel of a noise-free image (Poisson-Gaussian)."""
        return np.sqrt(np.maximum(self.noise_gain * np.maximum(image, 0.0) + self.noise_offset, 0.0))

    def add_noise(self, image: np.ndarray, rng: np.random.Generator, max_value: float) -> np.ndarray:
        """Noisy float32 copy of a noise-free (H, W) image, clipped to ``[0, max_value]``."""
        noisy = image + self.noise_std(image) * rng.standard_normal(image.shape)
        return np.clip(noisy, 0.0, max_value).astype(np.float32)


# --------------------------------------------------------------------------------------------- fitting


def _depth(labels: np.ndarray) -> np.ndarray:
    """Normalised depth (H, W) of each cell pixel: 0 at the rim, 1 at the cell's deepest pixel."""
    boundaries = np.zeros(labels.shape, bool)
    boundaries[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    boundaries[1:, :] |= labels[1:, :] != labels[:-1, :]
    dist = ndimage.distance_transform_edt((labels > 0) & ~boundaries)
    deepest = ndimage.maximum(dist, labels, np.arange(int(labels.max()) + 1))
    return np.where(labels > 0, dist / np.maximum(np.asarray(deepest)[labels], 1.0), 0.0)


def _normal_scores(values: np.ndarray) -> np.ndarray:
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return special.ndtri((ranks + 0.5) / max(values.size, 1))


class AppearanceAccumulator:
    """Collects per-cell and per-pixel statistics frame by frame; :meth:`result` fits :class:`CellAppearance`."""

    def __init__(self) -> None:
        self.cells: list[np.ndarray] = []  # rows: track key, t, mean, area
        self.profile = np.zeros((PROFILE_BINS, 2))  # sum of relative intensity, count
        self.texture: list[np.ndarray] = []  # rows: cell mean, within-cell residual var, lag-1 covariance
        self.noise: list[np.ndarray] = []  # rows: local mean, difference / sqrt 2
        self.background: list[np.ndarray] = []  # (G, G) per detailed frame
        self.halo: list[np.ndarray] = []  # (cells, HALO_PX) share of each cell's contrast at 1 ... HALO_PX px
        self.coarse: list[tuple[float, np.ndarray]] = []  # (sigma px, smoothed relative residual samples)
        self.exemplars: list[tuple[np.ndarray, np.ndarray]] = []  # (polar textures, [area, mean]) per frame
        self.patches: list[np.ndarray] = []  # cell-free background patches
        self.shape: tuple[int, int] | None = None

    def add_cells(self, key_base: int, t: int, image: np.ndarray, labels: np.ndarray) -> None:
        """Per-cell means of one frame (cheap: every frame). ``labels`` ids are track ids."""
        inside = labels > 0
        if not inside.any():
            return
        ids = labels[inside].astype(np.int64)
        count = np.bincount(ids)
        present = np.flatnonzero(count)
        means = np.bincount(ids, image[inside].astype(np.float64))[present] / count[present]
        rows = np.stack([key_base + present, np.full(present.size, t), means, count[present]], axis=1)
        self.cells.append(rows)

    def add_details(self, image: np.ndarray, labels: np.ndarray) -> None:
        """Profile, texture, noise and background of one frame (a few evenly spaced frames suffice)."""
        values = image.astype(np.float64)
        self.shape = values.shape
        inside = labels > 0
        n = int(labels.max()) + 1
        count = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
        cell_mean = np.bincount(labels.ravel(), values.ravel(), minlength=n) / count
        if inside.any():
            depth = _depth(labels)
            bins = np.minimum((depth * PROFILE_BINS).astype(int), PROFILE_BINS - 1)
            rel = values / np.maximum(cell_mean[labels], 1e-6)
            self.profile[:, 0] += np.bincount(bins[inside], rel[inside], minlength=PROFILE_BINS)
            self.profile[:, 1] += np.bincount(bins[inside], minlength=PROFILE_BINS)
            profile = self.profile[:, 0] / np.maximum(self.profile[:, 1], 1)
            residual = values - cell_mean[labels] * profile[bins]
            res_var = np.bincount(labels[inside], residual[inside] ** 2, minlength=n) / count
            same = inside[:, 1:] & (labels[:, 1:] == labels[:, :-1])
            lag = np.bincount(
                labels[:, 1:][same], (residual[:, 1:] * residual[:, :-1])[same], minlength=n
            ) / np.maximum(np.bincount(labels[:, 1:][same], minlength=n), 1)
            big = np.flatnonzero(count >= 50)
            big = big[big > 0]
            self.texture.append(np.stack([cell_mean[big], res_var[big], lag[big]], axis=1))
            self._add_coarse(residual / np.maximum(cell_mean[labels], 1e-6), labels, depth, count)
            self.exemplars.append(polar_textures(values, labels))
        local = ndimage.gaussian_filter(values, 2.0)
        diff = (values[:, 1:] - values[:, :-1]) / np.sqrt(2.0)
        rng = np.random.default_rng(len(self.noise))
        pick = rng.random(diff.shape) < min(1.0, 200_000 / diff.size)
        self.noise.append(np.stack([(local[:, 1:] + local[:, :-1])[pick] / 2.0, diff[pick]], axis=1))
        outside, (iy, ix) = ndimage.distance_transform_edt(~inside, return_indices=True)
        smooth = _smooth_background(values, outside > BACKGROUND_MARGIN)
        self.patches.extend(cut_patches(values, inside, np.random.default_rng(len(self.background))))
        self.background.append(_block_means(smooth))
        if inside.any():
            self._add_halo(values - smooth, labels, outside, labels[iy, ix], count)

    def _add_halo(
        self, above: np.ndarray, labels: np.ndarray, outside: np.ndarray, nearest: np.ndarray, count: np.ndarray
    ) -> None:
        """Per cell, the share of its contrast over the background left 1 ... HALO_PX px outside its mask.

        Kept per cell so that :meth:`result` can take the median: a mask drawn smaller than its cell (a TRA
        marker grown by a radius that fits most cells but not this one) would inflate a pooled estimate.
        """
        n = count.size
        ring = (labels == 0) & (outside <= HALO_PX)
        key = nearest[ring] * HALO_PX + np.ceil(outside[ring]).astype(int) - 1
        sums = np.bincount(key, above[ring], minlength=n * HALO_PX).reshape(n, HALO_PX)
        hits = np.bincount(key, minlength=n * HALO_PX).reshape(n, HALO_PX)
        contrast = np.bincount(labels.ravel(), above.ravel(), minlength=n) / count
        noise = (
            np.sqrt(max(float(np.var(above[outside > BACKGROUND_MARGIN])), 1e-12))
            if (outside > BACKGROUND_MARGIN).any()
            else 0.0
        )
        keep = (count >= 50) & (contrast > 3.0 * noise) & (hits > 0).all(1)
        keep[0] = False
        self.halo.append(sums[keep] / hits[keep] / contrast[keep, None])

    def _add_coarse(self, relative: np.ndarray, labels: np.ndarray, depth: np.ndarray, count: np.ndarray) -> None:
        """Samples of the relative residual smoothed at a tenth of a cell, away from the rim (normalised
        convolution within the cells, so the background does not leak in)."""
        sigma = float(np.sqrt(np.median(count[1:][count[1:] > 1]) / np.pi)) / COARSE_DIVISOR
        inside = labels > 0
        weight = ndimage.gaussian_filter(inside.astype(np.float64), sigma)
        smooth = ndimage.gaussian_filter(np.where(inside, relative, 0.0), sigma) / np.maximum(weight, 1e-6)
        deep = inside & (depth > 0.25) & (count[labels] >= 50)
        values = smooth[deep]
        rng = np.random.default_rng(len(self.coarse))
        self.coarse.append((sigma, values[rng.random(values.size) < min(1.0, 20_000 / max(values.size, 1))]))

    def result(self, log_area_mean: float, log_area_std: float) -> CellAppearance:
        if not self.cells or not self.noise:
            raise ValueError("no cells were added")
        cells = np.concatenate(self.cells)
        keys, t, means, areas = cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3]
        quantiles = np.quantile(means, QUANTILE_LEVELS)
        scores = _normal_scores(means)
        size_scores = (np.log(np.maximum(areas, 1.0)) - log_area_mean) / max(log_area_std, 1e-6)
        size_corr = float(np.corrcoef(scores, size_scores)[0, 1]) if means.size > 2 else 0.0
        order = np.lexsort((t, keys))
        k, tt, s = keys[order], t[order], scores[order]
        consecutive = (k[1:] == k[:-1]) & (tt[1:] == tt[:-1] + 1)
        temporal = float(np.corrcoef(s[:-1][consecutive], s[1:][consecutive])[0, 1]) if consecutive.sum() > 2 else 0.9
        gain, offset = _fit_noise(np.concatenate(self.noise))
        profile = self.profile[:, 0] / np.maximum(self.profile[:, 1], 1)
        profile = profile / max(float(np.average(profile, weights=np.maximum(self.profile[:, 1], 1))), 1e-6)
        contrast, grain = 0.0, 1.0
        if self.texture:
            tex = np.concatenate(self.texture)
            noise_var = gain * tex[:, 0] + offset
            signal_var = np.maximum(tex[:, 1] - noise_var, 0.0)
            contrast = float(np.median(np.sqrt(signal_var) / np.maximum(tex[:, 0], 1e-6)))
            rho = float(np.clip(np.median(tex[:, 2]) / max(float(np.median(signal_var)), 1e-9), 1e-3, 0.99))
            grain = float(np.clip(np.sqrt(-1.0 / (4.0 * np.log(rho))), 0.5, MAX_GRAIN))
        background = np.median(np.stack(self.background), axis=0)
        return CellAppearance(
            brightness_quantiles=[float(v) for v in quantiles],
            size_correlation=size_corr if np.isfinite(size_corr) else 0.0,
            temporal_correlation=temporal if np.isfinite(temporal) else 0.9,
            radial_profile=[float(v) for v in profile],
            texture_contrast=contrast,
            texture_grain=grain,
            noise_gain=gain,
            noise_offset=offset,
            background_map=[float(v) for v in background.ravel()],
            background_mean=float(background.mean()),
            halo_profile=_halo(self.halo),
            **self._coarse_result(),
            **self._exemplar_result(),
            **self._patch_result(),
        )

    def _patch_result(self) -> dict:
        if len(self.patches) < MIN_PATCHES or len({p.shape for p in self.patches}) != 1:
            return {}
        patches = np.stack(self.patches)
        if len(patches) > MAX_PATCHES:
            patches = patches[np.sort(np.random.default_rng(0).choice(len(patches), MAX_PATCHES, replace=False))]
        return {"background_patches": np.round(patches.reshape(len(patches), -1), 2).tolist()}

    def _exemplar_result(self) -> dict:
        textures = [t for t, _ in self.exemplars if len(t)]
        if not textures:
            return {}
        polar = np.concatenate(textures)
        cells = np.concatenate([c for t, c in self.exemplars if len(t)])
        if len(polar) > MAX_EXEMPLARS:  # evenly over the frames and cells seen, reproducibly
            keep = np.sort(np.random.default_rng(0).choice(len(polar), MAX_EXEMPLARS, replace=False))
            polar, cells = polar[keep], cells[keep]
        return {
            "exemplar_textures": np.round(polar.reshape(len(polar), -1), 3).tolist(),
            "exemplar_cells": cells.tolist(),
        }

    def _coarse_result(self) -> dict:
        samples = np.concatenate([v for _, v in self.coarse]) if self.coarse else np.empty(0)
        if samples.size < 100:
            return {}
        # Winsorised: inverse-CDF sampling would otherwise interpolate towards single outlier pixels.
        samples = np.clip(samples, *np.quantile(samples, [0.005, 0.995]))
        return {
            "coarse_quantiles": [float(v) for v in np.quantile(samples - samples.mean(), QUANTILE_LEVELS)],
            "coarse_sigma": float(np.median([sigma for sigma, _ in self.coarse])),
        }


def _halo(per_cell: list[np.ndarray]) -> list[float] | None:
    """Median halo over cells, in [0, 1] and never rising with distance; None without usable cells."""
    shares = np.concatenate(per_cell) if per_cell else np.empty((0, HALO_PX))
    if shares.shape[0] < 3:
        return None
    return [float(v) for v in np.minimum.accumulate(np.clip(np.median(shares, axis=0), 0.0, 1.0))]


def _smooth_background(values: np.ndarray, far: np.ndarray) -> np.ndarray:
    """(H, W) slow background of one frame: normalised convolution of the background pixels ``far``."""
    sigma = max(values.shape) / (2.0 * BACKGROUND_GRID)
    weight = ndimage.gaussian_filter(far.astype(np.float64), sigma)
    smooth = ndimage.gaussian_filter(np.where(far, values, 0.0), sigma) / np.maximum(weight, 1e-6)
    fallback = float(np.median(values[far])) if far.any() else float(np.median(values))
    return np.where(weight > 1e-3, smooth, fallback)


def _block_means(smooth: np.ndarray) -> np.ndarray:
    """(G, G) block means of a smooth (H, W) background."""
    rows = np.array_split(np.arange(smooth.shape[0]), BACKGROUND_GRID)
    cols = np.array_split(np.arange(smooth.shape[1]), BACKGROUND_GRID)
    return np.array([[smooth[np.ix_(r, c)].mean() for c in cols] for r in rows])


def _fit_noise(samples: np.ndarray) -> tuple[float, float]:
    """Poisson-Gaussian ``var = gain * mean + offset`` by weighted least squares on robust per-bin variances.

    Args:
        samples: (N, 2) local mean and neighbour difference / sqrt(2) (the difference of two noisy pixels has
            twice the variance; the MAD makes the per-bin variance robust to edges).
    """
    mean, diff = samples[:, 0], samples[:, 1]
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, NOISE_BINS + 1)))
    which = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    centres, variances, weights = [], [], []
    for b in range(len(edges) - 1):
        d = diff[which == b]
        if d.size < 200:
            continue
        mad = np.median(np.abs(d - np.median(d)))
        centres.append(float(mean[which == b].mean()))
        variances.append(float((1.4826 * mad) ** 2))
        weights.append(float(d.size))
    if len(centres) < 2:
        return 0.0, float(np.var(diff))
    a = np.stack([np.asarray(centres), np.ones(len(centres))], axis=1)
    w = np.sqrt(np.asarray(weights))
    (gain, offset), *_ = np.linalg.lstsq(a * w[:, None], np.asarray(variances) * w, rcond=None)
    if gain < 0:  # no signal dependence: Gaussian noise only
        return 0.0, float(np.average(variances, weights=weights))
    if offset < 0:  # pure Poisson through the origin
        gain = float(np.dot(centres, np.asarray(variances) * weights) / np.dot(centres, np.asarray(centres) * weights))
        return max(gain, 0.0), 0.0
    return float(gain), float(offset)


def fit_appearance(
    frames: Iterable[tuple[int, int, np.ndarray, np.ndarray, bool]], log_area_mean: float, log_area_std: float
) -> CellAppearance:
    """Fit :class:`CellAppearance` from ``(key_base, t, image, labels, detailed)`` tuples, one per frame."""
    acc = AppearanceAccumulator()
    for key_base, t, image, labels, detailed in frames:
        acc.add_cells(key_base, t, image, labels)
        if detailed:
            acc.add_details(image, labels)
    return acc.result(log_area_mean, log_area_std)
