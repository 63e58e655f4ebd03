"""Masks that cover the whole cell, also where the annotation gives only eroded markers.

CTC TRA masks are markers: on GOWT1 they are nuclei eroded by ~8 px (median IoU 0.58 with the gold SEG masks).
A shape model or a texture model fitted on them learns cells half their real area with a hard cut through the
nucleus, and a segmenter trained on the synthetic data learns the wrong size. The growth that best matches the
sequence's own SEG frames is estimated once and applied to every TRA frame; it is 0 where TRA already holds whole
cells (SIM+, synthetic data) or where there is no SEG to compare with.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from skimage.segmentation import expand_labels

from cellgen.data.ctc import CTCSequence
from cellgen.data.frames import resize_labels, scaled_shape


def sequential_labels(labels: np.ndarray) -> np.ndarray:
    ids, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape).astype(np.int32)
    return out if ids[0] == 0 else out + 1


def matched_iou(reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    """For each reference instance, IoU with the candidate instance that overlaps it most (0 when none)."""
    ref, cand = sequential_labels(reference), sequential_labels(candidate)
    n_ref, n_cand = int(ref.max()) + 1, int(cand.max()) + 1
    inter = np.bincount((ref * n_cand + cand).ravel(), minlength=n_ref * n_cand).reshape(n_ref, n_cand)
    area_ref, area_cand = inter.sum(1), inter.sum(0)
    scores = []
    for r in range(1, n_ref):
        row = inter[r, 1:]
        if not row.any():
            scores.append(0.0)
            continue
        c = int(row.argmax()) + 1
        scores.append(float(inter[r, c] / (area_ref[r] + area_cand[c] - inter[r, c])))
    return scores


def match_to_tracks(instances: np.ndarray, tra: np.ndarray) -> dict[int, int]:
    """Map instance labels to the TRA (track) label each overlaps most; one instance per track.

    SEG/ST label ids are arbitrary per frame (CTC format); the TRA markers carry the track ids.

    Args:
        instances: (H, W) instance labels.
        tra: (H, W) TRA labels of the same frame.

    Returns:
        ``{instance_label: track_id}`` for matched instances.
    """
    both = (instances > 0) & (tra > 0)
    if not both.any():
        return {}
    inst = instances[both].astype(np.int64)
    trk = tra[both].astype(np.int64)
    pairs, counts = np.unique(np.stack([inst, trk]), axis=1, return_counts=True)
    best: dict[int, tuple[int, int]] = {}  # instance -> (count, track)
    for (i, k), c in zip(pairs.T.tolist(), counts.tolist(), strict=True):
        if c > best.get(i, (0, 0))[0]:
            best[i] = (c, k)
    owner: dict[int, tuple[int, int]] = {}  # track -> (count, instance)
    for i, (c, k) in best.items():
        if c > owner.get(k, (0, 0))[0]:
            owner[k] = (c, i)
    return {i: k for k, (_, i) in owner.items()}


def estimate_tra_expansion(
    seq: CTCSequence, downscale: float = 1.0, max_radius: float = 16.0, max_frames: int = 4
) -> float:
    """Growth (full-resolution px) of TRA markers that best matches the sequence's own SEG (else ST) masks.

    Uses up to ``max_frames`` frames that have both TRA and the reference; returns 0 when there are none (e.g.
    synthetic data, whose TRA masks are the full cells).
    """
    reference_paths, reference_mask = (
        (seq.seg_paths, seq.seg_mask) if seq.seg_paths else (seq.st_seg_paths, seq.st_mask)
    )
    both = [t for t in reference_paths if t in seq.tra_paths]
    if not both:
        return 0.0
    picks = [both[i] for i in np.unique(np.linspace(0, len(both) - 1, min(max_frames, len(both))).round().astype(int))]
    pairs = []
    for t in picks:
        shape = scaled_shape(seq.shape, downscale)
        pairs.append((resize_labels(reference_mask(t), shape), resize_labels(seq.tra_mask(t), shape)))
    radii = np.arange(0, int(np.ceil(max_radius * downscale)) + 1)
    scores = [np.mean([s for seg, tra in pairs for s in matched_iou(seg, expand_labels(tra, r))]) for r in radii]
    return float(radii[int(np.argmax(scores))] / downscale)


def resolve_tra_expansion(seq: CTCSequence, tra_expand: float | Literal["auto"]) -> float:
    """``tra_expand`` in full-resolution px, estimating it from the sequence's SEG frames when ``auto``."""
    if tra_expand == "auto":
        return estimate_tra_expansion(seq)
    if float(tra_expand) < 0:
        raise ValueError(f"tra_expand must be >= 0 or 'auto', got {tra_expand}")
    return float(tra_expand)


def cell_mask(seq: CTCSequence, t: int, radius: float) -> np.ndarray:
    """Whole-cell labels (H, W) of frame ``t`` with track ids.

    TRA markers grown by ``radius`` px (never merging cells); where the frame has SEG (else ST) masks, each
    instance matched to a track replaces that track's grown marker, so annotated cells keep their real shape.
    """
    tra = seq.tra_mask(t)
    step = int(round(radius))
    labels = expand_labels(tra, step) if step > 0 else tra.copy()
    reference = seq.seg_mask(t) if t in seq.seg_paths else seq.st_mask(t) if t in seq.st_seg_paths else None
    if reference is None:
        return labels
    mapping = match_to_tracks(reference, tra)
    if not mapping:
        return labels
    lut = np.zeros(int(reference.max()) + 1, labels.dtype)
    for instance, track in mapping.items():
        lut[instance] = track
    matched = lut[reference]
    labels[np.isin(labels, list(mapping.values()))] = 0
    return np.where(matched > 0, matched, labels)
