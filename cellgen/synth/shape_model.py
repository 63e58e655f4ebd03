"""Statistical cell model fitted on a training sequence's own masks: shape, size, growth, motion, division.

BVDM (Yilmaz et al. 2024, arXiv:2403.17808) generates the masks and lineages of a synthetic video from real-data
statistics before any texture is synthesised (its reference code for that step is unpublished MATLAB).
Everything here is *fitted* on CTC ``TRA`` masks:

* shape: a point-distribution model of radial profiles (:mod:`cellgen.synth.contour`); log-radii normalised
  by size, mean + PCA keeping 95 % of the variance (at most 12 components). Elongation is the profile's
  second harmonic, so aspect ratio comes out of the PCA rather than a separate parameter;
* size: log-normal area; growth: per-track slope of log-area per frame;
* temporal shape change: the lag at which consecutive profiles decorrelate sets the width of the Gaussian
  kernel that blends shape samples drawn at keyframes (the paper's Gaussian blending between shapes);
* motion: empirical quantile tables of speed (with its lag-1 autocorrelation), turning angle and rotation
  per frame; division: rate per cell and frame from the lineage, the mean shape of the last mother frame and
  the first daughter frame, and the daughter-to-mother area ratio; track lengths; image intensities.

The fitted numbers are plain floats and lists (:meth:`ShapeModel.to_dict`), so a model lives in a Lightning
checkpoint or a JSON file without pickling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from cellgen.data.cell_extent import cell_mask, resolve_tra_expansion
from cellgen.data.ctc import CTCSequence, daughters_of
from cellgen.data.errors import CellgenInputError
from cellgen.synth.appearance import AppearanceAccumulator, CellAppearance
from cellgen.synth.contour import (
    aligned_sq_distance,
    canonical_profiles,
    polygon_area,
    profile_aspect,
    radial_profile,
    render_local,
)
from cellgen.synth.intensity import IntensityAccumulator, IntensityStats

MODEL_VERSION = 1
QUANTILES = np.linspace(0.0, 1.0, 33)
# Prior floor on divisions per cell per frame (one division per ~200 frames), used when the training data shows
# fewer than MIN_DIVISIONS divisions: GOWT1 01 has 2, too few to estimate a rate, yet users must be able to
# request divisions. With enough divisions the observed rate is used as is.
DIVISION_RATE_FLOOR = 0.005
MIN_DIVISIONS = 5
# Frames over which a mother rounds up before it splits (and a daughter relaxes after): mitotic rounding lasts
# a few frames at CTC frame rates; too few divisions in one sequence to fit it, so it is a documented prior.
ROUNDING_FRAMES = 3
# Division statistics are shrunk towards priors (mother rounds to a circle, daughters start round with half the
# mother's area each) with this many pseudo-observations, so two examples cannot dictate them.
DIVISION_PRIOR_WEIGHT = 2.0
DAUGHTER_RATIO_PRIOR = (0.5, 0.05)
GROWTH_MIN_FRAMES = 10  # shorter tracks give slopes dominated by segmentation noise
MIN_TURN_SPEED = 0.5  # px/frame; below this the heading of a displacement is segmentation jitter
MIN_ROTATION_ASPECT = 1.15  # the long axis of rounder cells is too unstable to measure rotation
MAX_LAG = 30  # frames searched for the shape decorrelation time
_OPTIONAL = {"rounding_frames", "stats", "notes", "appearance", "neighbour_quantiles"}  # absent in older models
_ARRAYS = (
    "mean_profile",
    "components",
    "variances",
    "speed_quantiles",
    "turn_quantiles",
    "rotation_quantiles",
    "mitosis_profile",
    "daughter_profile",
)


# --------------------------------------------------------------------------------------------- generated cells


@dataclass
class CellTrack:
    """One generated cell's shape over its life in its own local crop frame.

    The local frame is fixed to the cell: its origin (the crop centre) is the radial profile's centre and the
    cell's long axis (k = 0 spoke) lies along local x, so consecutive masks differ by deformation and growth
    only; motion and rotation belong to the scene transform.
    """

    label: int
    begin: int
    radii: np.ndarray  # (n, K) float32 boundary radius per angle, in px
    crop: int
    parent: int = 0
    divides: bool = False

    def __len__(self) -> int:
        return len(self.radii)

    @property
    def end(self) -> int:
        return self.begin + len(self.radii) - 1

    def mask(self, t: int) -> np.ndarray:
        """Local (crop, crop) bool mask at absolute frame ``t``."""
        if not self.begin <= t <= self.end:
            raise IndexError(f"track {self.label} spans frames {self.begin}..{self.end}, not {t}")
        return render_local(self.radii[t - self.begin], self.crop)

    def masks(self) -> np.ndarray:
        """(n, crop, crop) bool local masks over the whole life."""
        return np.stack([render_local(r, self.crop) for r in self.radii])


@dataclass
class CellLineage:
    """A mother track and, after a division, two daughter tracks (``parent`` = the mother's label).

    ``daughter_offsets[label]`` is where a daughter's local origin sits in the mother's local frame (dy, dx) in
    px at the division; a daughter's local frame has the mother's rotation.
    """

    tracks: list[CellTrack]
    division_frame: int | None = None
    daughter_offsets: dict[int, tuple[float, float]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- the model


@dataclass
class ShapeModel:
    """Fitted statistics; build with :meth:`fit` (or :meth:`from_dict`), sample with :meth:`sample_track_masks`."""

    n_angles: int
    mean_profile: np.ndarray  # (K,) mean normalised log-radius (canonical orientation)
    components: np.ndarray  # (C, K) PCA directions
    variances: np.ndarray  # (C,) PCA variances
    log_area_mean: float
    log_area_std: float
    area_min: float  # 1st percentile of the area (px); samples are clipped to [area_min, area_max]
    area_max: float  # 99th percentile
    max_radius: float  # 99th percentile of a cell's largest radius (px), sets the crop
    growth_mean: float  # log-area change per frame
    growth_std: float
    shape_sigma: float  # Gaussian blending width in frames
    speed_quantiles: np.ndarray  # (Q,) px/frame
    speed_autocorr: float  # lag-1 correlation of speed normal scores
    turn_quantiles: np.ndarray  # (Q,) rad, signed change of heading per frame
    rotation_quantiles: np.ndarray  # (Q,) rad, signed change of long-axis angle per frame
    division_rate: float  # divisions per cell per frame used for sampling
    mitosis_profile: np.ndarray  # (K,) mean normalised log-radius of a mother's last frame
    daughter_profile: np.ndarray  # (K,) mean normalised log-radius of a daughter's first frame
    daughter_area_ratio_mean: float  # daughter area / mother's last area
    daughter_area_ratio_std: float
    intensity: IntensityStats
    appearance: CellAppearance | None = None  # per-cell brightness, texture, background, noise (None: old model)
    # (Q,) quantiles of each cell's nearest-neighbour centre distance / (r_self + r_neighbour), equivalent radii;
    # 1 means touching. Lets a scene reproduce the data's colonies instead of uniformly scattered cells.
    # None: an older model (uniform placement).
    neighbour_quantiles: np.ndarray | None = None
    rounding_frames: int = ROUNDING_FRAMES
    stats: dict = field(default_factory=dict)  # descriptive numbers for summary() (not used to sample)
    notes: list[str] = field(default_factory=list)

    # ----------------------------------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        sequences: Sequence[str | Path | CTCSequence] | str | Path | CTCSequence,
        max_frames: int | None = None,
        n_angles: int = 64,
        variance_kept: float = 0.95,
        max_components: int = 12,
        intensity_frames: int = 16,
        tra_expand: float | str = "auto",
    ) -> ShapeModel:
        """Fit every statistic on the TRA masks (and raw frames) of one or more CTC sequences.

        Args:
            sequences: sequence folders (``.../01``) or :class:`CTCSequence` objects; pooled.
            max_frames: use only the first ``max_frames`` annotated frames of each sequence.
            n_angles: K, angles of the radial descriptor.
            variance_kept: PCA keeps the fewest components explaining this fraction (paper: 95 %).
            max_components: cap on PCA components.
            intensity_frames: evenly spaced frames per sequence used for brightness statistics.
            tra_expand: growth (px) of TRA markers to whole cells, or ``auto`` to match the sequence's own SEG
                frames (:mod:`cellgen.data.cell_extent`); shapes and brightness are of whole cells.
        """
        if isinstance(sequences, (str, Path, CTCSequence)):
            sequences = [sequences]
        seqs = [s if isinstance(s, CTCSequence) else CTCSequence(s) for s in sequences]
        if not seqs:
            raise CellgenInputError(None, "ShapeModel.fit needs at least one sequence")
        obs = _Observations(n_angles)
        accumulator = IntensityAccumulator()
        appearance = AppearanceAccumulator()
        division_pairs: list[tuple[int, int, list[int]]] = []  # mother's last key and frame, daughters' first keys
        n_divisions = 0
        for index, seq in enumerate(seqs):
            frames = list(seq.tra_paths)[:max_frames]
            if not frames:
                raise CellgenInputError(seq.gt_dir / "TRA", "no TRA masks to fit a shape model on")
            with_images = [t for t in frames if t in seq.frame_paths]
            pick = np.unique(np.linspace(0, len(with_images) - 1, min(intensity_frames, len(with_images))).round())
            chosen = {with_images[int(i)] for i in pick} if with_images else set()
            radius = resolve_tra_expansion(seq, tra_expand)
            for t in frames:
                mask = cell_mask(seq, t, radius)
                if t in seq.frame_paths:
                    image = seq.image(t)
                    appearance.add_cells(index << _BITS, t, image, mask)
                    if t in chosen:
                        accumulator.add(image, mask)
                        appearance.add_details(image, mask)
                obs.add_frame(index, t, mask, is_last=t == frames[-1])
            frame_set = set(frames)
            if seq.has_tracks:
                table = seq.tracks
                for parent, kids in daughters_of(table).items():
                    if len(kids) < 2 or parent not in table:
                        continue
                    if table[parent].end in frame_set and all(table[k].begin in frame_set for k in kids):
                        n_divisions += 1
                        mother = _key(index, parent, table[parent].end)
                        kid_keys = [_key(index, k, table[k].begin) for k in kids]
                        division_pairs.append((mother, table[parent].end, kid_keys))
        return _fit_from_observations(
            cls, obs.finish(), accumulator, appearance, division_pairs, n_divisions, seqs, variance_kept, max_components
        )

    # ----------------------------------------------------------------------------------------- reporting

    @property
    def n_components(self) -> int:
        return int(len(self.variances))

    def suggested_crop(self, multiple: int = 16) -> int:
        """Smallest multiple of ``multiple`` that holds the 99th-percentile cell with a margin for growth."""
        need = 2.0 * self.max_radius * 1.15 + 4.0
        return int(math.ceil(need / multiple) * multiple)

    def summary(self) -> dict:
        """Fitted numbers in plain Python types, with notes on what could not be estimated from the data."""
        out = dict(self.stats)
        out.update(
            pca_components=self.n_components,
            log_area_mean=round(self.log_area_mean, 4),
            log_area_std=round(self.log_area_std, 4),
            area_p01_px=round(self.area_min, 1),
            area_p99_px=round(self.area_max, 1),
            max_radius_p99_px=round(self.max_radius, 2),
            mean_shape_aspect=round(profile_aspect(np.exp(self.mean_profile)), 3),
            growth_log_area_per_frame=round(self.growth_mean, 5),
            growth_log_area_per_frame_std=round(self.growth_std, 5),
            shape_sigma_frames=round(self.shape_sigma, 2),
            speed_median_px=round(float(np.median(self.speed_quantiles)), 3),
            speed_autocorr=round(self.speed_autocorr, 3),
            turn_abs_median_deg=round(float(np.degrees(np.median(np.abs(self.turn_quantiles)))), 2),
            rotation_abs_median_deg=round(float(np.degrees(np.median(np.abs(self.rotation_quantiles)))), 2),
            division_rate=self.division_rate,
            mitosis_aspect=round(profile_aspect(np.exp(self.mitosis_profile)), 3),
            daughter_aspect=round(profile_aspect(np.exp(self.daughter_profile)), 3),
            daughter_area_ratio_mean=round(self.daughter_area_ratio_mean, 3),
            daughter_area_ratio_std=round(self.daughter_area_ratio_std, 3),
            rounding_frames=self.rounding_frames,
            suggested_crop=self.suggested_crop(),
            intensity={k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.intensity.to_dict().items()},
            notes=list(self.notes),
        )
        return out

    def to_dict(self) -> dict:
        """JSON-able dict (lists and floats only) for checkpoints and files."""
        out: dict = {"version": MODEL_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _ARRAYS or (f.name == "neighbour_quantiles" and value is not None):
                value = np.asarray(value, np.float64).tolist()
            elif f.name in ("intensity", "appearance"):
                value = value.to_dict() if value is not None else None
            elif f.name in ("stats", "notes"):
                value = _plain(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ShapeModel:
        """Rebuild a model written by :meth:`to_dict`."""
        if data.get("version") != MODEL_VERSION:
            raise CellgenInputError(None, f"shape model version {data.get('version')} is not {MODEL_VERSION}")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data) - _OPTIONAL)
        if missing:
            raise CellgenInputError(None, f"shape model dict lacks {', '.join(missing)}")
        kwargs = {k: v for k, v in data.items() if k in names}
        for name in _ARRAYS:
            kwargs[name] = np.asarray(kwargs[name], np.float64)
        kwargs["components"] = kwargs["components"].reshape(-1, int(data["n_angles"]))
        kwargs["intensity"] = IntensityStats.from_dict(kwargs["intensity"])
        if kwargs.get("appearance") is not None:
            kwargs["appearance"] = CellAppearance.from_dict(kwargs["appearance"])
        if kwargs.get("neighbour_quantiles") is not None:
            kwargs["neighbour_quantiles"] = np.asarray(kwargs["neighbour_quantiles"], np.float64)
        return cls(**kwargs)

    # ----------------------------------------------------------------------------------------- sampling

    def sample_area(self, rng: np.random.Generator) -> float:
        """A cell area (px) from the fitted log-normal, clipped to the observed 1st-99th percentile range."""
        return float(np.clip(np.exp(rng.normal(self.log_area_mean, self.log_area_std)), self.area_min, self.area_max))

    def sample_speed(self, z: float) -> float:
        """Speed (px/frame) at normal score ``z`` (a Gaussian copula keeps the fitted speed autocorrelation)."""
        return float(np.interp(special.ndtr(z), QUANTILES, self.speed_quantiles))

    def sample_turn(self, rng: np.random.Generator) -> float:
        return float(np.interp(rng.random(), QUANTILES, self.turn_quantiles))

    def sample_rotation(self, rng: np.random.Generator) -> float:
        return float(np.interp(rng.random(), QUANTILES, self.rotation_quantiles))

    def shape_series(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """(length, K) normalised log-radius profiles that change smoothly in time.

        PCA coefficients are drawn at keyframes every ``~shape_sigma`` frames and blended with a Gaussian kernel
        of width ``shape_sigma``; dividing by the kernel's L2 norm keeps the fitted per-frame variance (a plain
        weighted mean would shrink it).
        """
        sigma = max(self.shape_sigma, 1.0)
        if self.n_components == 0:
            return np.repeat(self.mean_profile[None], length, axis=0)
        spacing = max(1.0, round(sigma))
        knots = np.arange(-3.0 * sigma, length + 3.0 * sigma + spacing, spacing)
        coeffs = rng.standard_normal((knots.size, self.n_components)) * np.sqrt(self.variances)
        weights = np.exp(-0.5 * ((np.arange(length)[:, None] - knots[None, :]) / sigma) ** 2)
        blended = weights @ coeffs / np.sqrt((weights**2).sum(1, keepdims=True))
        return self.mean_profile[None] + blended @ self.components

    def sample_radii(
        self,
        rng: np.random.Generator,
        length: int,
        crop: int,
        area: float | None = None,
        growth: float | None = None,
        round_end: bool = False,
        round_start: bool = False,
    ) -> np.ndarray:
        """(length, K) float32 boundary radii of one cell's life in its local frame.

        Args:
            area: area (px) at the first frame; default a fitted sample.
            growth: log-area change per frame; default a fitted sample. Area stays below the 99th percentile.
            round_end: blend into the fitted mitotic shape over the last ``rounding_frames`` (a mother).
            round_start: start from the fitted daughter shape and relax over ``rounding_frames`` (a daughter).
        """
        area = self.sample_area(rng) if area is None else float(area)
        if growth is None:  # within 2 std: the tails of a handful of tracks are not a growth law
            growth = self.growth_mean + self.growth_std * float(np.clip(rng.standard_normal(), -2.0, 2.0))
        mirror = bool(rng.random() < 0.5)
        profiles = self.shape_series(rng, length)
        steps = np.arange(length, dtype=np.float64)
        ramp = max(self.rounding_frames, 1)
        if round_end:
            alpha = np.clip((steps - (length - 1 - ramp)) / ramp, 0.0, 1.0)[:, None]
            profiles = (1 - alpha) * profiles + alpha * self.mitosis_profile[None]
        if round_start:
            alpha = np.clip(1.0 - steps / ramp, 0.0, 1.0)[:, None]
            profiles = (1 - alpha) * profiles + alpha * self.daughter_profile[None]
        if mirror:
            profiles = profiles[:, (-np.arange(self.n_angles)) % self.n_angles]
        areas = np.clip(area * np.exp(growth * steps), min(0.5 * self.area_min, area), max(self.area_max, area))
        unit = np.exp(profiles - profiles.mean(1, keepdims=True))
        radii = unit * np.sqrt(areas / polygon_area(unit))[:, None]
        # A cell that outgrows its crop is scaled down (shape kept) rather than cut by the crop edge.
        limit = crop / 2.0 - 1.5
        radii *= np.minimum(1.0, limit / radii.max(1, keepdims=True))
        return radii.astype(np.float32)

    def sample_daughters(
        self,
        rng: np.random.Generator,
        mother_area: float,
        crop: int,
        lengths: tuple[int, int],
        divides: tuple[bool, bool] = (False, False),
        gap: float = 1.0,
    ) -> list[tuple[np.ndarray, float]]:
        """Two daughters of a mother of ``mother_area`` px: ``[(radii (length, K), offset along the axis)]``.

        Daughter areas are the fitted ratio times the mother's; they sit on the mother's long axis (local x),
        touching at the mother's origin with ``gap`` px between them, and keep the mother's rotation.

        Args:
            lengths: frames each daughter lives (planned).
            divides: whether each daughter ends in a division of its own (then it rounds up at its end).
        """
        half = self.n_angles // 2
        out = []
        for sign, length, ends in zip((-1.0, 1.0), lengths, divides, strict=True):
            ratio = np.clip(rng.normal(self.daughter_area_ratio_mean, self.daughter_area_ratio_std), 0.15, 0.85)
            radii = self.sample_radii(rng, length, crop, area=ratio * mother_area, round_start=True, round_end=ends)
            facing = radii[0, 0] if sign < 0 else radii[0, half]  # spoke pointing at the other daughter
            out.append((radii, sign * (float(facing) + gap / 2.0)))
        return out

    def sample_track_masks(
        self,
        rng: np.random.Generator,
        frames: int,
        crop: int | None = None,
        divide: bool = False,
        divide_at: int | None = None,
    ) -> CellLineage:
        """One cell's masks for ``frames`` frames in local crops, optionally dividing into two daughters.

        Args:
            rng: the only source of randomness (same seed, same masks).
            frames: length of the lineage in frames.
            crop: local crop size (default :meth:`suggested_crop`).
            divide: split once; the mother's last frame is ``divide_at - 1`` and daughters begin at ``divide_at``
                (default: uniform in the middle third).

        Returns:
            A :class:`CellLineage`: the mother (label 1) and, with ``divide``, daughters 2 and 3 (parent 1).
        """
        crop = crop or self.suggested_crop()
        if frames < 1:
            raise CellgenInputError(None, f"frames must be >= 1, got {frames}")
        if not divide:
            return CellLineage([CellTrack(1, 0, self.sample_radii(rng, frames, crop), crop)])
        if frames < 2:
            raise CellgenInputError(None, "a division needs at least 2 frames")
        if divide_at is None:
            divide_at = int(rng.integers(max(1, frames // 3), max(2, (2 * frames) // 3) + 1))
        divide_at = int(np.clip(divide_at, 1, frames - 1))
        mother = CellTrack(1, 0, self.sample_radii(rng, divide_at, crop, round_end=True), crop, divides=True)
        mother_area = float(polygon_area(mother.radii[-1].astype(np.float64)))
        lineage = CellLineage([mother], divide_at)
        length = frames - divide_at
        for label, (radii, offset) in enumerate(self.sample_daughters(rng, mother_area, crop, (length, length)), 2):
            lineage.tracks.append(CellTrack(label, divide_at, radii, crop, parent=1))
            lineage.daughter_offsets[label] = (0.0, offset)
        return lineage


# --------------------------------------------------------------------------------------------- fitting helpers


_BITS = 21  # bits for a frame index and for a track id in a key


def _key(seq: int, label: int, t: int) -> int:
    """One int64 per (sequence, track, frame) so that lag look-ups are a vectorised ``searchsorted``."""
    return (seq << (2 * _BITS)) | (label << _BITS) | t


class _Observations:
    """Per-cell measurements collected frame by frame (one frame of masks in memory at a time)."""

    def __init__(self, n_angles: int) -> None:
        self.n_angles = n_angles
        self.rows: dict[str, list] = {k: [] for k in ("key", "seq", "label", "t", "area", "cy", "cx", "angle")}
        self.rows.update(aspect=[], border=[], last=[], profile=[], reach=[])

    def add_frame(self, seq: int, t: int, mask: np.ndarray, is_last: bool) -> None:
        height, width = mask.shape
        for index, box in enumerate(ndimage.find_objects(mask)):
            if box is None:
                continue
            label = index + 1
            prof = radial_profile(mask[box] == label, self.n_angles)
            border = box[0].start == 0 or box[1].start == 0 or box[0].stop == height or box[1].stop == width
            log_r = np.log(prof.radii)
            values = (
                _key(seq, label, t),
                seq,
                label,
                t,
                prof.area,
                prof.centroid[0] + box[0].start,
                prof.centroid[1] + box[1].start,
                prof.angle,
                prof.aspect,
                border,
                is_last,
                log_r - log_r.mean(),
                float(prof.radii.max()),
            )
            for name, value in zip(self.rows, values, strict=True):
                self.rows[name].append(value)

    def finish(self) -> dict[str, np.ndarray]:
        if not self.rows["key"]:
            raise CellgenInputError(None, "the training masks hold no cells")
        data = {k: np.asarray(v) for k, v in self.rows.items()}
        order = np.argsort(data["key"], kind="stable")
        return {k: v[order] for k, v in data.items()}


def _lag_pairs(keys: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) with the same sequence and track and ``t_j = t_i + lag`` (keys sorted)."""
    target = keys + lag
    j = np.searchsorted(keys, target)
    j_clip = np.minimum(j, keys.size - 1)
    hit = keys[j_clip] == target
    return np.nonzero(hit)[0], j_clip[hit]


def _wrap(angle: np.ndarray, period: float) -> np.ndarray:
    """Wrap into ``(-period / 2, period / 2]``."""
    return -((-angle + period / 2) % period - period / 2)


def _quantiles(values: np.ndarray, tails: tuple[float, float] = (0.0, 0.99)) -> np.ndarray:
    """Quantile table of ``values`` winsorised to the ``tails`` quantiles.

    The extremes of tracked quantities are mostly annotation artefacts (a 60 px "step" where a mask was
    redrawn), and inverse-CDF sampling would otherwise interpolate towards them.
    """
    if not values.size:
        return np.zeros(QUANTILES.size)
    lo, hi = np.quantile(values, tails)
    return np.quantile(np.clip(values, lo, hi), QUANTILES)


def _plain(value):
    """numpy scalars and containers -> plain Python for JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fit_from_observations(
    cls, obs, accumulator, appearance, division_pairs, n_divisions, seqs, variance_kept, max_components
):
    notes: list[str] = []
    n_angles = obs["profile"].shape[1]
    valid = ~obs["border"]  # cells cut by the image edge have a wrong shape, area and centroid
    if valid.sum() < 2:
        raise CellgenInputError(seqs[0].path, "fewer than 2 cells away from the image border to fit shapes on")
    keys = obs["key"]

    # Shape: PCA of canonical normalised log-radii.
    canon = canonical_profiles(obs["profile"][valid])
    mean_profile = canon.mean(0)
    centred = canon - mean_profile
    var, vecs = np.linalg.eigh(centred.T @ centred / max(canon.shape[0] - 1, 1))  # K x K: cheaper than an SVD
    var, vt = np.clip(var[::-1], 0.0, None), vecs[:, ::-1].T
    total = float(var.sum())
    kept = int(np.searchsorted(np.cumsum(var) / max(total, 1e-12), variance_kept) + 1)
    kept = max(1, min(kept, max_components, var.size))
    components, variances = vt[:kept], var[:kept]

    # Size and growth.
    areas = obs["area"][valid].astype(np.float64)
    log_area = np.log(areas)
    groups = np.unique(keys >> _BITS, return_inverse=True)[1]  # one id per (sequence, track)
    slopes, weights = _growth_rates(groups[valid], obs["t"][valid].astype(np.float64), log_area)
    if slopes.size:
        growth_mean = float(np.average(slopes, weights=weights))
        growth_std = float(np.sqrt(np.average((slopes - growth_mean) ** 2, weights=weights)))
    else:
        growth_mean = growth_std = 0.0
        notes.append(f"no track with >= {GROWTH_MIN_FRAMES} unclipped frames: growth set to 0")

    # Temporal shape correlation -> Gaussian blending width.
    shape_sigma, tau_found = _shape_sigma(keys, valid, obs["profile"], total)
    if not tau_found:
        notes.append(f"cell shapes stay correlated beyond {MAX_LAG} frames or the tracks: blending width capped")

    # Motion.
    a, b = _lag_pairs(keys, 1)
    ok = valid[a] & valid[b]
    a, b = a[ok], b[ok]
    dy, dx = obs["cy"][b] - obs["cy"][a], obs["cx"][b] - obs["cx"][a]
    speed = np.hypot(dy, dx)
    heading = np.arctan2(dy, dx)
    step_from = np.full(keys.size, -1, np.int64)
    step_from[a] = np.arange(a.size)  # the displacement that starts at each observation
    follow = step_from[b]  # the displacement after each one (-1: none)
    chained = follow >= 0
    first, second = np.nonzero(chained)[0], follow[chained]
    moving = (speed[first] > MIN_TURN_SPEED) & (speed[second] > MIN_TURN_SPEED)
    turns = _wrap(heading[second[moving]] - heading[first[moving]], 2 * np.pi)
    speed_autocorr = 0.0
    if speed.size > 2 and first.size > 2:
        scores = special.ndtri((np.argsort(np.argsort(speed)) + 0.5) / speed.size)
        x, y = scores[first], scores[second]
        if x.std() > 0 and y.std() > 0:
            speed_autocorr = float(np.clip(np.corrcoef(x, y)[0, 1], 0.0, 0.99))
    elongated = (obs["aspect"][a] > MIN_ROTATION_ASPECT) & (obs["aspect"][b] > MIN_ROTATION_ASPECT)
    rotations = _wrap(obs["angle"][b[elongated]] - obs["angle"][a[elongated]], np.pi)
    if speed.size == 0:
        notes.append("no consecutive frames of a track: motion statistics are zero (cells stand still)")
    if rotations.size == 0:
        notes.append("no elongated cells tracked over consecutive frames: rotation set to 0")

    # Divisions.
    index_of = {int(k): i for i, k in enumerate(keys)}
    at_risk = int((~obs["last"]).sum())
    rate_observed = n_divisions / max(at_risk, 1)
    if n_divisions < MIN_DIVISIONS:
        division_rate = max(rate_observed, DIVISION_RATE_FLOOR)
        notes.append(
            f"only {n_divisions} divisions in the training data: division rate floored at the prior "
            f"{DIVISION_RATE_FLOOR}/cell/frame (observed {rate_observed:.5f}); division shapes and size ratio "
            "rest on few examples"
        )
    else:
        division_rate = rate_observed
    mothers, daughters, ratios = [], [], []
    for mother_key, mother_end, kid_keys in division_pairs:
        m = index_of.get(mother_key)
        if m is not None and valid[m]:
            mothers.append(obs["profile"][m])
        for kid_key in kid_keys:
            k = index_of.get(kid_key)
            # A daughter first annotated frames after the split has already relaxed and grown: not a first frame.
            if k is None or not valid[k] or obs["t"][k] != mother_end + 1:
                continue
            daughters.append(obs["profile"][k])
            if m is not None and valid[m]:
                ratios.append(obs["area"][k] / obs["area"][m])
    # Shrinkage towards the priors: a sum over the examples plus DIVISION_PRIOR_WEIGHT prior observations
    # (the prior profile is a circle, log-radius 0, so it adds nothing to the sum).
    mitosis_profile = _shrunk_mean(canonical_profiles(np.array(mothers)) if mothers else np.zeros((0, n_angles)))
    daughter_profile = _shrunk_mean(canonical_profiles(np.array(daughters)) if daughters else np.zeros((0, n_angles)))
    prior_mean, prior_std = DAUGHTER_RATIO_PRIOR
    r = np.asarray(ratios, np.float64)
    ratio_mean = float((r.sum() + DIVISION_PRIOR_WEIGHT * prior_mean) / (r.size + DIVISION_PRIOR_WEIGHT))
    ratio_std = float(
        np.sqrt(
            (((r - ratio_mean) ** 2).sum() + DIVISION_PRIOR_WEIGHT * prior_std**2) / (r.size + DIVISION_PRIOR_WEIGHT)
        )
    )
    if not ratios:
        notes.append("no measurable division: daughters get half the mother's area and round shapes (prior)")

    # Track lengths (over all observations, including border cells).
    _, lengths = np.unique(groups, return_counts=True)
    touches_end = np.zeros(lengths.size, bool)
    np.logical_or.at(touches_end, groups, obs["last"])
    starts = obs["t"] == np.array([min(seq.tra_paths) for seq in seqs])[obs["seq"]]
    touches_start = np.zeros(lengths.size, bool)
    np.logical_or.at(touches_start, groups, starts)
    censored = touches_end | touches_start

    intensity = accumulator.result() if accumulator.dtype is not None else _no_intensity(notes)
    cell_appearance = appearance.result(float(log_area.mean()), float(log_area.std())) if appearance.noise else None
    stats = {
        "sequences": [str(s.path) for s in seqs],
        "cell_frames": int(keys.size),
        "cells_for_shape": int(valid.sum()),
        "tracks": int(lengths.size),
        "area_median_px": round(float(np.median(areas)), 1),
        "equivalent_radius_px": round(float(np.sqrt(np.median(areas) / np.pi)), 2),
        "aspect_median": round(float(np.median(obs["aspect"][valid])), 3),
        "pca_variance_explained": round(float(variances.sum() / max(total, 1e-12)), 4),
        "area_growth_pct_per_frame": round(100.0 * (math.exp(growth_mean) - 1), 3),
        "growth_tracks": int(slopes.size),
        "speed_mean_px": round(float(speed.mean()) if speed.size else 0.0, 3),
        "speed_samples": int(speed.size),
        "turn_samples": int(turns.size),
        "rotation_samples": int(rotations.size),
        "divisions_observed": int(n_divisions),
        "division_rate_observed": round(rate_observed, 6),
        "division_mothers_measured": len(mothers),
        "division_daughters_measured": len(daughters),
        "track_length_mean": round(float(lengths.mean()), 2),
        "track_length_median": float(np.median(lengths)),
        "track_length_uncensored_median": float(np.median(lengths[~censored])) if (~censored).any() else None,
        "tracks_censored_fraction": round(float(censored.mean()), 3),
    }
    return cls(
        n_angles=n_angles,
        mean_profile=mean_profile,
        components=components,
        variances=variances,
        log_area_mean=float(log_area.mean()),
        log_area_std=float(log_area.std()),
        area_min=float(np.percentile(areas, 1)),
        area_max=float(np.percentile(areas, 99)),
        max_radius=float(np.percentile(obs["reach"][valid], 99)),
        growth_mean=growth_mean,
        growth_std=growth_std,
        shape_sigma=shape_sigma,
        speed_quantiles=_quantiles(speed),  # winsorised at the 99th percentile
        speed_autocorr=speed_autocorr,
        turn_quantiles=_quantiles(turns, (0.0, 1.0)),
        rotation_quantiles=_quantiles(rotations, (0.01, 0.99)),
        division_rate=float(division_rate),
        mitosis_profile=mitosis_profile,
        daughter_profile=daughter_profile,
        daughter_area_ratio_mean=ratio_mean,
        daughter_area_ratio_std=ratio_std,
        intensity=intensity,
        appearance=cell_appearance,
        neighbour_quantiles=_neighbour_quantiles(obs),
        stats=_plain(stats),
        notes=notes,
    )


def _neighbour_quantiles(obs: dict[str, np.ndarray]) -> np.ndarray | None:
    """Quantiles of nearest-neighbour distance / (sum of the two equivalent radii) over all cell-frames.

    Cells cut by the image border count as neighbours (they are there) but not as subjects (their own nearest
    neighbour may be outside the field). None when no frame holds two cells.
    """
    frame_id = np.unique(np.stack([obs["seq"], obs["t"]], 1), axis=0, return_inverse=True)[1].ravel()
    centres = np.stack([obs["cy"], obs["cx"]], 1).astype(np.float64)
    radius = np.sqrt(obs["area"].astype(np.float64) / np.pi)
    ratios = []
    for f in np.unique(frame_id):
        idx = np.flatnonzero(frame_id == f)
        if idx.size < 2:
            continue
        dist = np.linalg.norm(centres[idx, None] - centres[None, idx], axis=-1)
        np.fill_diagonal(dist, np.inf)
        nearest = dist.argmin(1)
        ratio = dist[np.arange(idx.size), nearest] / (radius[idx] + radius[idx[nearest]])
        ratios.append(ratio[~obs["border"][idx]])
    values = np.concatenate(ratios) if ratios else np.empty(0)
    return np.quantile(values, QUANTILES) if values.size >= 2 else None


def _growth_rates(groups: np.ndarray, t: np.ndarray, log_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of log-area over frames per long-enough track, and its precision weight.

    The weight ``sum (t - mean t)^2`` is the inverse variance of a slope under i.i.d. noise, so short or
    partly observed tracks (a cell shrinking out of focus in its last frames) count little.
    """
    count = np.bincount(groups)
    t_mean = np.bincount(groups, t) / np.maximum(count, 1)
    y_mean = np.bincount(groups, log_area) / np.maximum(count, 1)
    dt = t - t_mean[groups]
    sxy = np.bincount(groups, dt * (log_area - y_mean[groups]))
    sxx = np.bincount(groups, dt * dt)
    use = (count >= GROWTH_MIN_FRAMES) & (sxx > 0)
    return sxy[use] / sxx[use], sxx[use]


def _shape_sigma(keys: np.ndarray, valid: np.ndarray, profiles: np.ndarray, total_var: float) -> tuple[float, bool]:
    """Gaussian blending width (frames) from the lag at which shape correlation drops below 1/e.

    The variogram ``E|p(t+L) - p(t)|^2 / 2`` of a track's profiles (best of the four descriptor symmetries)
    gives the correlation ``rho(L) = 1 - variogram / total variance``. Blending keyframe samples with a
    Gaussian of width sigma yields ``rho(L) = exp(-L^2 / (4 sigma^2))``, so ``sigma = tau / 2`` where
    ``rho(tau) = 1/e``. Sigma is at least 1 frame so consecutive masks stay smooth.
    """
    if total_var <= 0:
        return 1.0, True
    previous_lag, previous_rho = 0, 1.0
    for lag in range(1, MAX_LAG + 1):
        i, j = _lag_pairs(keys, lag)
        ok = valid[i] & valid[j]
        if ok.sum() < 10:
            return float(np.clip(previous_lag / 2.0, 1.0, MAX_LAG / 2.0)), False
        rho = 1.0 - float(aligned_sq_distance(profiles[i[ok]], profiles[j[ok]]).mean()) / (2.0 * total_var)
        if rho < math.exp(-1.0):
            tau = previous_lag + (previous_rho - math.exp(-1.0)) / max(previous_rho - rho, 1e-9) * (lag - previous_lag)
            return float(np.clip(tau / 2.0, 1.0, MAX_LAG / 2.0)), True
        previous_lag, previous_rho = lag, rho
    return MAX_LAG / 2.0, False


def _shrunk_mean(profiles: np.ndarray) -> np.ndarray:
    """Mean of (N, K) profiles shrunk towards the circle by DIVISION_PRIOR_WEIGHT pseudo-observations."""
    return profiles.sum(0) / (profiles.shape[0] + DIVISION_PRIOR_WEIGHT)


def _no_intensity(notes: list[str]) -> IntensityStats:
    notes.append("no raw frames beside the masks: intensity statistics are placeholders")
    return IntensityStats(0.7, 0.1, 0.1, 0.05, 0.01, 0.0, 0.01, "float32", 1.0)
