"""Scoring of mitosis detections given as points ``(t, y, x[, score])`` against ground-truth events.

A prediction detects an event when it lies within ``temporal_tol`` frames and ``spatial_tol`` pixels of it
(both inclusive), the point-matching protocol of mitosis detection papers (e.g. Phan et al. 2019).
Two counting rules are offered:

- ``"hungarian"`` (default, strict): one-to-one matching that maximises the number of matched pairs
  (Hungarian algorithm). A second prediction near an already matched event is a false positive.
- ``"lenient"``: the lenient rule (as the issue reads Phan et al. 2019): an event counts as detected if
  ANY prediction is within tolerance (many-to-one), and a prediction is a false positive only if it is
  near no event. Duplicates are not penalised, so precision, recall and F1 are never below their
  Hungarian values; always report which rule was used.

Empty-set convention: a ratio whose denominator is zero is 1.0 (no predictions means none was wrong;
no events means none was missed), so no events and no predictions give precision = recall = F1 = 1.0,
while events with no predictions give recall 0 and F1 0, and predictions with no events give precision 0
and F1 0. F1 is computed as ``2 tp / (2 tp + fp + fn)``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from cellgen.data.points import as_points

RULES = ("hungarian", "lenient")

_EDGE_SLACK = 1e-9  # tolerances are inclusive; absorb float rounding at the edge (e.g. hypot(6, 8) = 10)
_TEMPORAL_WEIGHT = 1e-3  # cost per frame of offset: only breaks ties between equally distant predictions


def _admissible(
    gt: np.ndarray, pred: np.ndarray, spatial_tol: float, temporal_tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise (N, M) admissibility mask and spatial / temporal distances between events and predictions."""
    dt = np.abs(gt[:, None, 0] - pred[None, :, 0])
    ds = np.hypot(gt[:, None, 1] - pred[None, :, 1], gt[:, None, 2] - pred[None, :, 2])
    ok = (dt <= temporal_tol + _EDGE_SLACK) & (ds <= spatial_tol + _EDGE_SLACK)
    return ok, ds, dt


def _check_tolerances(spatial_tol: float, temporal_tol: float) -> None:
    if spatial_tol < 0 or temporal_tol < 0:
        given = f"spatial_tol={spatial_tol}, temporal_tol={temporal_tol}"
        raise ValueError(f"tolerances must be >= 0, got {given}")


def match_events(
    gt: np.ndarray, pred: np.ndarray, spatial_tol: float = 10.0, temporal_tol: float = 1
) -> list[tuple[int, int]]:
    """One-to-one matching of predictions to events with the most matches, then the least total distance.

    A pair is admissible iff ``|t_gt - t_pred| <= temporal_tol`` and the (y, x) Euclidean distance is
    ``<= spatial_tol``. Its cost is the spatial distance plus a tiny temporal tie-break. Inadmissible pairs
    cost more than any set of admissible ones, so the assignment first maximises the number of admissible
    pairs (greedy nearest-first can miss some), and they are filtered out afterwards.

    Args:
        gt: (N, 3+) ground-truth events ``(t, y, x, ...)``.
        pred: (M, 3+) predictions ``(t, y, x[, score])``; scores are ignored.
        spatial_tol: pixels, inclusive.
        temporal_tol: frames, inclusive.

    Returns:
        Matched ``(gt_index, pred_index)`` pairs, sorted by ``gt_index``.
    """
    _check_tolerances(spatial_tol, temporal_tol)
    gt, pred = as_points(gt, "gt"), as_points(pred, "pred")
    if len(gt) == 0 or len(pred) == 0:
        return []
    ok, ds, dt = _admissible(gt, pred, spatial_tol, temporal_tol)
    if not ok.any():
        return []
    cost = ds + _TEMPORAL_WEIGHT * dt
    # Any matching with k+1 admissible pairs must beat every one with k: one inadmissible pair has to cost
    # more than min(N, M) admissible pairs together.
    big = (min(ok.shape) + 1) * (float(cost[ok].max()) + 1.0)
    rows, cols = linear_sum_assignment(np.where(ok, cost, big))
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if ok[i, j]]


def score_detections(
    gt: np.ndarray,
    pred: np.ndarray,
    spatial_tol: float = 10.0,
    temporal_tol: float = 1,
    rule: str = "hungarian",
) -> dict[str, float | int]:
    """Precision, recall and F1 of point detections under the given counting rule (see module docstring).

    Args:
        gt: (N, 3+) ground-truth events ``(t, y, x, ...)``.
        pred: (M, 3+) predictions ``(t, y, x[, score])``; already thresholded, scores are ignored.
        spatial_tol: pixels, inclusive.
        temporal_tol: frames, inclusive.
        rule: ``"hungarian"`` (one-to-one) or ``"lenient"`` (an event is found if any prediction is near it).

    Returns:
        ``{"precision", "recall", "f1"}`` floats and ``{"tp", "fp", "fn"}`` ints. Under ``"lenient"``,
        ``tp`` counts detected events and ``fp`` counts predictions near no event.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    _check_tolerances(spatial_tol, temporal_tol)
    gt, pred = as_points(gt, "gt"), as_points(pred, "pred")
    if rule == "hungarian":
        tp = len(match_events(gt, pred, spatial_tol, temporal_tol))
        fp, fn = len(pred) - tp, len(gt) - tp
    else:
        ok = _admissible(gt, pred, spatial_tol, temporal_tol)[0]
        tp = int(ok.any(axis=1).sum())
        fp = int((~ok.any(axis=0)).sum())
        fn = len(gt) - tp
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _ratio(num: int, den: int) -> float:
    """``num / den`` with the empty-set convention ``0 / 0 = 1.0``."""
    return 1.0 if den == 0 else num / den


def per_event_report(
    gt: np.ndarray, pred: np.ndarray, spatial_tol: float = 10.0, temporal_tol: float = 1
) -> list[dict[str, float | int | bool]]:
    """Why each event was found or missed: its one-to-one match and the best prediction near it.

    Run on detections kept at a low threshold, ``best_score`` is the detector's score at the event (0 when nothing
    was within tolerance): a missed event with a high score lost to the threshold, one with score 0 was not seen.

    Args:
        gt: (N, 3+) events ``(t, y, x, ...)``.
        pred: (M, 4) predictions ``(t, y, x, score)``.
        spatial_tol: pixels, inclusive.
        temporal_tol: frames, inclusive.

    Returns:
        One dict per event, in ``gt`` order: ``t, y, x``; ``matched`` (Hungarian); ``best_score`` of the
        predictions within tolerance; ``distance`` (px) and ``dt`` (frames) of the nearest prediction within
        ``temporal_tol`` frames whatever its distance (None when there is none).
    """
    gt, pred = as_points(gt, "gt"), as_points(pred, "pred")
    if len(pred) and pred.shape[1] < 4:
        raise ValueError("pred needs a score column (t, y, x, score)")
    matched = {i for i, _ in match_events(gt, pred, spatial_tol, temporal_tol)}
    rows: list[dict[str, float | int | bool]] = []
    ok, ds, dt = _admissible(gt, pred, spatial_tol, temporal_tol) if len(pred) else (None, None, None)
    for i, event in enumerate(gt):
        row: dict = {"t": int(round(event[0])), "y": float(event[1]), "x": float(event[2]), "matched": i in matched}
        row["best_score"] = float(pred[ok[i], 3].max()) if ok is not None and ok[i].any() else 0.0
        near = np.flatnonzero(dt[i] <= temporal_tol + _EDGE_SLACK) if dt is not None else np.zeros(0, int)
        if len(near):
            j = near[np.argmin(ds[i, near])]
            row["distance"], row["dt"] = float(ds[i, j]), int(round(pred[j, 0] - event[0]))
        else:
            row["distance"] = row["dt"] = None
        rows.append(row)
    return rows
