"""From a detector's per-voxel mitosis probabilities to scored points (Phan et al. 2019, Sec. III G).

Windows of k frames at stride 2 cover the sequence; the sigmoid outputs of overlapping windows are averaged per
frame. The volume is binarised at a threshold fixed on the training frames (never on the test frames), split into
3-D connected components, and each component's centre of mass is one detection (t, y, x, score = its peak),
mapped back to original frames and pixels. Any network ``(1, 1, k, H, W) -> logits`` works here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from cellgen.data.event_frames import EDGE_PADDINGS, pad_in_time
from cellgen.data.mitosis_data import MitosisSequence
from cellgen.metrics.mitosis import score_detections

CALIBRATION_THRESHOLDS = tuple(np.round(np.concatenate([[0.02, 0.03], np.arange(0.05, 0.951, 0.05)]), 3))


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """First frames of the windows: every ``stride`` frames, plus one flush with the end so every frame is seen."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def window_probabilities(
    net: nn.Module, frames: torch.Tensor, window: int, stride: int = 2, edge_padding: str = "none"
) -> torch.Tensor:
    """Average of the sigmoid outputs of all windows covering each frame (Sec. III G).

    Without padding (the paper) the first and the last frame are each seen by one window only, at its first or
    last position: the mother is missing before frame 0 and the daughters after frame T - 1, and nothing averages
    a spurious peak down. On a movie it has never seen, the SIM+ detector put 49 of its 68 HeLa detections in those
    two frames (docs/RESULTS.md, issue 12). ``edge_padding`` adds about k - 1 frames at both ends, so every real frame
    is seen by as many windows, at the same positions, as an interior frame; the padded frames' outputs are dropped.
    Measured (RESULTS.md, fourth iteration): the 18-frame SIM+ detector's end-frame detections on HeLa fall from 17
    to 5 at one threshold; a whole-movie detector still piles some into the last frame (a model effect, not a
    coverage one).

    Args:
        net: maps (1, 1, k, H, W) to logits of the same shape.
        frames: (T, H, W).
        window: k; an unpadded sequence shorter than k is one shorter window.
        stride: frames between window starts (paper: 2).
        edge_padding: ``none`` (paper), ``replicate`` (the end frames repeated: a still scene holds no division)
            or ``reflect`` (mirrored in time).

    Returns:
        (T, H, W) probabilities.
    """
    if edge_padding not in EDGE_PADDINGS:
        raise ValueError(f"edge padding must be one of {EDGE_PADDINGS}, got {edge_padding!r}")
    length = frames.shape[0]
    # k - 1 frames after; before, k - 1 rounded up to the stride, so that interior windows start where they would
    # without padding (the same frames, the same outputs).
    after = 0 if edge_padding == "none" else window - 1
    before = stride * -(-after // stride)
    padded = pad_in_time(frames, before, after, edge_padding)
    total = torch.zeros_like(padded, dtype=torch.float32)
    count = torch.zeros(padded.shape[0], dtype=torch.float32, device=frames.device)
    starts = window_starts(length, window, stride)
    if edge_padding != "none":
        # no window flush with the end: the k - 1 padded frames after the movie already cover its last frame at every
        # position, and one more window there would weigh the last frames differently from the interior ones
        starts = [s for s in range(0, padded.shape[0] - window + 1, stride) if before - window < s < before + length]
    for start in starts:
        clip = padded[start : start + window]
        total[start : start + len(clip)] += torch.sigmoid(net(clip[None, None].float()))[0, 0]
        count[start : start + len(clip)] += 1
    return (total / count[:, None, None])[before : before + length]


def detect_components(probability: np.ndarray, threshold: float, min_voxels: int = 1) -> np.ndarray:
    """Detections (M, 4) (t, y, x, score) in volume coordinates from a (T, H, W) probability volume.

    Each 3-D connected component (26-connectivity) of ``probability > threshold`` with at least ``min_voxels``
    voxels gives its probability-weighted centre of mass and its peak probability as score.
    """
    binary = probability > threshold
    labels, count = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return np.zeros((0, 4))
    index = np.arange(1, count + 1)
    sizes = ndimage.sum(binary, labels, index)
    centres = np.asarray(ndimage.center_of_mass(probability, labels, index), np.float64).reshape(-1, 3)
    peaks = np.asarray(ndimage.maximum(probability, labels, index), np.float64)
    keep = sizes >= min_voxels
    return np.column_stack([centres[keep], peaks[keep]])


def detect_peaks(probability: np.ndarray, threshold: float, radius: float = 4.0, radius_t: int = 2) -> np.ndarray:
    """Detections (M, 4) (t, y, x, score) in volume coordinates: local maxima of a (T, H, W) heat map.

    A voxel is a detection when it is at least ``threshold`` and the largest within ``radius_t`` frames and a disc
    of ``radius`` pixels (non-maximum suppression over about one cell); a plateau of equal maxima gives one
    detection at its centre. Unlike components of a thresholded map, two neighbouring divisions stay two.
    """
    if not (probability >= threshold).any():
        return np.zeros((0, 4))
    r = max(0, int(np.floor(radius)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    footprint = np.broadcast_to((yy**2 + xx**2 <= radius**2)[None], (2 * radius_t + 1, 2 * r + 1, 2 * r + 1))
    peak = (probability >= threshold) & (probability == ndimage.maximum_filter(probability, footprint=footprint))
    labels, count = ndimage.label(peak, structure=np.ones((3, 3, 3), bool))
    index = np.arange(1, count + 1)
    centres = np.asarray(ndimage.center_of_mass(peak, labels, index), np.float64).reshape(-1, 3)
    scores = np.asarray(ndimage.maximum(probability, labels, index), np.float64)
    return np.column_stack([refine_peaks(probability, centres), scores])


def refine_peaks(probability: np.ndarray, centres: np.ndarray, radius: int = 1) -> np.ndarray:
    """Sub-voxel (t, y, x): the probability-weighted mean over the (2 radius + 1)^3 box around each peak.

    At a quarter of the original size a voxel is 4 px, close to the 10 px matching radius, so a whole-voxel peak
    alone loses matches that its neighbours' weights recover.
    """
    refined = np.asarray(centres, np.float64).copy()
    for row in refined:
        box = tuple(
            slice(max(0, int(round(c)) - radius), min(n, int(round(c)) + radius + 1))
            for c, n in zip(row, probability.shape, strict=True)
        )
        weights = probability[box].astype(np.float64)
        if weights.sum() <= 0:
            continue
        grids = np.meshgrid(*(np.arange(b.start, b.stop) for b in box), indexing="ij")
        row[:] = [float((g * weights).sum() / weights.sum()) for g in grids]
    return refined


def to_original(detections: np.ndarray, sequence: MitosisSequence) -> np.ndarray:
    """Volume coordinates (t position, stored px) -> original (frame index, px) of (M, 4) detections."""
    if not len(detections):
        return detections.reshape(0, 4)
    indices = np.asarray(sequence.volume.indices)
    positions = np.clip(np.round(detections[:, 0]).astype(int), 0, len(indices) - 1)
    yx = sequence.volume.to_full(detections[:, 1:3])
    return np.column_stack([indices[positions], yx, detections[:, 3]])


def calibrate_threshold(
    probability: np.ndarray,
    sequence: MitosisSequence,
    spatial_tol: float,
    temporal_tol: int,
    min_voxels: int = 1,
    thresholds: tuple[float, ...] = CALIBRATION_THRESHOLDS,
    find: Callable[[np.ndarray, float], np.ndarray] | None = None,
    prefer_low: bool = False,
) -> tuple[float, float]:
    """Threshold with the best F1 on the training frames only (Sec. III G: fixed on training data).

    Args:
        probability: (T, H, W) of the whole sequence; only detections in the first ``train_frames`` count.
        sequence: gives the training points and the coordinate mapping.
        spatial_tol: matching radius in original pixels.
        temporal_tol: matching tolerance in frames.
        min_voxels: smallest component kept.
        thresholds: candidates, ascending; ties go to the higher threshold (fewer false positives).
        find: ``(probability, threshold) -> (M, 4)`` volume detections; None: :func:`detect_components`.
        prefer_low: ties go to the lowest threshold instead. A detector that memorised its few training events
            scores them higher than unseen ones, so the lowest threshold that still fits them keeps the most recall
            (SIM+, 5 training events: test F1 0.58 at the lowest tying threshold, 0.23 at the highest; RESULTS.md).

    Returns:
        (threshold, training F1).
    """
    train_points, _ = sequence.split_points()
    best = (0.5, -1.0)
    for threshold in thresholds:
        part = probability[: sequence.train_frames]
        found = detect_components(part, threshold, min_voxels) if find is None else find(part, threshold)
        f1 = score_detections(train_points, to_original(found, sequence), spatial_tol, temporal_tol)["f1"]
        if f1 > best[1] or (f1 == best[1] and not prefer_low):
            best = (float(threshold), float(f1))
    return best
