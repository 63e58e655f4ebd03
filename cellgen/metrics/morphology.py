"""Cell-shape statistics of real vs synthetic masks and the temporal consistency of a video.

Follows "Neural Cell Video Synthesis via Optical-Flow Diffusion" (Sec. 4.5, Table 2): per-cell, per-frame
shape measures of real and generated masks are compared by their means and spreads, a Welch t-test and a
two-sample Kolmogorov-Smirnov test, and shown as violin plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats
from skimage.measure import regionprops_table

MEASURES: tuple[str, ...] = ("area", "perimeter", "major_axis_length", "eccentricity", "orientation")


def region_table(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Shape measures of every cell in every frame.

    Args:
        masks: (T, H, W) integer instance masks (0 = background); a single (H, W) frame is accepted.

    Returns:
        ``{measure: (N,) float array}`` for :data:`MEASURES` plus ``frame`` and ``label``, one entry per
        (frame, cell); orientation is skimage's angle of the major axis to the row axis, in radians.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or not np.issubdtype(masks.dtype, np.integer):
        raise ValueError(f"masks must be (T, H, W) integer labels, got shape {masks.shape} {masks.dtype}")
    columns: dict[str, list[np.ndarray]] = {key: [] for key in ("frame", "label", *MEASURES)}
    for t, frame in enumerate(masks):
        table = regionprops_table(frame, properties=("label", *MEASURES))
        columns["frame"].append(np.full(len(table["label"]), t))
        for key, values in table.items():
            columns[key].append(values)
    return {
        key: np.concatenate(parts).astype(np.int64 if key in ("frame", "label") else np.float64)
        for key, parts in columns.items()
    }


def compare_morphology(
    real_table: Mapping[str, np.ndarray],
    synth_table: Mapping[str, np.ndarray],
    measures: Sequence[str] = MEASURES,
) -> dict[str, dict[str, float]]:
    """Do synthetic cells have the shapes of real ones?

    Returns:
        ``{measure: {real_mean, real_std, synth_mean, synth_std, t_pvalue, ks_pvalue, ks_statistic}}``;
        the t-test is Welch's (unequal variances: synthetic sets are often tighter than real ones).
        p-values are NaN when either side has fewer than two cells.
    """
    out: dict[str, dict[str, float]] = {}
    for key in measures:
        real = np.asarray(real_table[key], dtype=np.float64)
        synth = np.asarray(synth_table[key], dtype=np.float64)
        row = {
            "real_mean": float(np.mean(real)) if len(real) else float("nan"),
            "real_std": _sample_std(real),
            "synth_mean": float(np.mean(synth)) if len(synth) else float("nan"),
            "synth_std": _sample_std(synth),
            "t_pvalue": float("nan"),
            "ks_pvalue": float("nan"),
            "ks_statistic": float("nan"),
        }
        if len(real) >= 2 and len(synth) >= 2:
            row["t_pvalue"] = float(stats.ttest_ind(real, synth, equal_var=False).pvalue)
            ks = stats.ks_2samp(real, synth)
            row["ks_pvalue"], row["ks_statistic"] = float(ks.pvalue), float(ks.statistic)
        out[key] = row
    return out


def violin_plots(
    real_table: Mapping[str, np.ndarray],
    synth_table: Mapping[str, np.ndarray],
    path_png: str | Path,
    labels: tuple[str, str] = ("real", "synthetic"),
    measures: Sequence[str] = MEASURES,
) -> Path:
    """One violin subplot per measure, real beside synthetic; written as a PNG and its path returned."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(measures), figsize=(3.2 * len(measures), 3.4), squeeze=False)
    for ax, key in zip(axes[0], measures, strict=True):
        data = [np.asarray(real_table[key], float), np.asarray(synth_table[key], float)]
        present = [i for i, values in enumerate(data) if len(values) > 0]
        if present:
            ax.violinplot([data[i] for i in present], positions=[i + 1 for i in present], showmedians=True)
        ax.set_xticks([1, 2], labels)
        ax.set_title(key.replace("_", " "))
    fig.tight_layout()
    fig.savefig(path_png, dpi=100)
    plt.close(fig)
    return path_png


def temporal_consistency(video: np.ndarray, masks: np.ndarray) -> float:
    """Mean absolute frame-to-frame intensity change inside cells (lower = steadier texture).

    Only pixels that are inside a cell in both frames t and t + 1 count, so cell motion and background
    flicker do not enter the number.

    Args:
        video: (T, H, W) intensities, any real dtype.
        masks: (T, H, W) instance masks; nonzero = inside a cell.
    """
    video = np.asarray(video, dtype=np.float64)
    masks = np.asarray(masks)
    if video.ndim != 3 or video.shape != masks.shape:
        raise ValueError(f"video and masks must both be (T, H, W); got {video.shape} and {masks.shape}")
    if video.shape[0] < 2:
        raise ValueError("temporal consistency needs at least two frames")
    inside = (masks[1:] != 0) & (masks[:-1] != 0)
    if not inside.any():
        return float("nan")
    return float(np.abs(video[1:] - video[:-1])[inside].mean())


def _sample_std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")
