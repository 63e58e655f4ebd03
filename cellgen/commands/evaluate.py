"""``cellgen evaluate ...``: score results (ctc), training data (downstream), realism (fid, morphology, video), mitosis.

Plain typed functions; jsonargparse builds their options (and ``--config``) from the signatures. Each prints one
JSON line last and returns 0; bad input raises :class:`~cellgen.data.errors.CellgenInputError` (exit status 2).
Heavy imports (torch, Lightning, the metric networks) happen inside the functions so ``cellgen evaluate --help``
stays fast. List options take ``--train [A,B]`` or a single ``--train A``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cellgen.commands.downstream import DownstreamBudget
from cellgen.commands.evaluate_video import evaluate_video_command
from cellgen.commands.reports import format_cell, jsonable, markdown_table, write_report
from cellgen.data.ctc import checked_sequence
from cellgen.data.errors import CellgenInputError

SCORES = ("SEG", "TRA", "DET")


# --------------------------------------------------------------------------------------------- reports


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _bar_plot(path: Path, rows: Sequence[Mapping[str, object]], keys: Sequence[str], title: str) -> Path:
    """Grouped bars of ``keys`` per row (e.g. SEG/TRA/DET of real vs synthetic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(keys), 3.2))
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        values = [float(row.get(k)) if row.get(k) is not None else 0.0 for k in keys]
        ax.bar(np.arange(len(keys)) + (i - (len(rows) - 1) / 2) * width, values, width, label=str(row["name"]))
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------- commands


def evaluate_ctc_command(*, gt: str, res: str, threads: int = 1) -> int:
    """SEG, TRA and DET of a CTC result folder against its ground truth (the CTC measures, py-ctcmetrics).

    Args:
        gt: the ground-truth folder ``NN_GT`` (TRA with man_track.txt; SEG for the SEG measure).
        res: the result folder ``NN_RES`` (maskTTT.tif + res_track.txt).
        threads: worker processes for mask matching.
    """
    from cellgen.metrics.ctc_measures import evaluate_ctc

    scores = evaluate_ctc(gt, res, threads=threads)
    print(json.dumps(jsonable({"gt": gt, "res": res, **scores})))
    return 0


def evaluate_downstream_command(
    *,
    train: list[str] | str,
    test: str,
    synthetic: list[str] | str | None = None,
    out: str = "runs/downstream",
    budget: DownstreamBudget = DownstreamBudget(),
    seed: int = 0,
    combined: bool = True,
    wandb_project: str | None = None,
) -> int:
    """Does the synthetic data help? Train a segmenter on real and on synthetic data, score both on a real test.

    The BVDM Table 1 protocol (Yilmaz et al. 2024): the row "real" trains on --train, the row "synthetic" on
    --synthetic, under the same budget and seed; both segment and track --test and are scored by SEG/TRA/DET,
    with their ratio. Writes OUT/{real,synthetic,real + synthetic}/ (checkpoint, NN_RES result), OUT/report.json and
    OUT/report.md; the last printed line is JSON with the rows.

    Args:
        train: real training sequence folder(s), e.g. data/Fluo-N2DH-GOWT1/01 (or [A,B]).
        test: the real test sequence folder, e.g. data/Fluo-N2DH-GOWT1/02 (its _GT is the reference).
        synthetic: synthetic training sequence folder(s) in CTC layout (from `cellgen synthesize`).
        out: output folder.
        budget: the training/segmentation budget held equal for every row (configs/downstream.yaml).
        seed: training seed of every row.
        combined: with --synthetic, also a row trained on real + synthetic together (synthetic data must never
            hurt when added).
        wandb_project: also log the table to this W&B project (offline unless WANDB_MODE is set).
    """
    from cellgen.commands.downstream import run_downstream

    out_dir = Path(out)
    sets = [("real", _as_list(train))] + ([("synthetic", _as_list(synthetic))] if synthetic else [])
    if synthetic and combined:
        sets.append(("real + synthetic", _as_list(train) + _as_list(synthetic)))
    for path in [test, *(p for _, paths in sets for p in paths)]:
        checked_sequence(path)  # every input passes the shared CTC validation before any training starts
    rows = []
    for name, sequences in sets:
        row = run_downstream(sequences, test, str(out_dir / name), budget, seed, name)
        rows.append(row)
        scores = ", ".join(f"{k} {format_cell(row[k])}" for k in SCORES)
        print(f"{name}: {scores} ({row['wall_s']} s)", flush=True)
    table = list(rows)
    ratio = None
    real = rows[0]
    for other in rows[1:]:
        name = f"{other['name']} / real"
        values = {k: (other[k] / real[k] if real.get(k) and other.get(k) is not None else None) for k in SCORES}
        table.append({"name": name, **values})
        ratio = ratio or {}
        ratio[other["name"]] = values
    columns = ["name", *SCORES, "train_s", "wall_s"]
    plot = _bar_plot(out_dir / "downstream.png", rows, SCORES, f"tested on {Path(test).parent.name}/{Path(test).name}")
    write_report(out_dir, "downstream", table, columns, {"ratio": ratio, "test": test}, {"scores": plot}, wandb_project)
    print(markdown_table(table, columns))
    summary = [{k: row.get(k) for k in ("name", *SCORES, "wall_s", "train")} for row in rows]
    print(json.dumps(jsonable({"rows": summary, "ratio": ratio, "report": str(out_dir / "report.json")})))
    return 0


def sequence_frames(path: str, size: int, max_frames: int) -> np.ndarray:
    """Up to ``max_frames`` evenly spaced frames (N, size, size) of a sequence, percentile-normalised to [0, 1]."""
    from cellgen.data.segmentation_data import normalised_frame, resize_image, sequence_percentiles

    seq = checked_sequence(path)
    low, high = sequence_percentiles(seq)
    indices = seq.frame_indices
    picks = np.unique(np.linspace(0, len(indices) - 1, min(max_frames, len(indices))).round().astype(int))
    frames = []
    for i in picks:
        frame = normalised_frame(seq, indices[i], low, high)
        frames.append(np.clip(resize_image(frame, (size, size)), 0.0, 1.0))
    return np.stack(frames).astype(np.float32)


def _clips(path: str, frames: int, size: int, max_clips: int) -> np.ndarray:
    """Non-overlapping clips (N, frames, size, size) in [0, 1] of one sequence, at most ``max_clips``."""
    from cellgen.data.segmentation_data import normalised_frame, resize_image, sequence_percentiles

    seq = checked_sequence(path)
    low, high = sequence_percentiles(seq)
    indices = seq.frame_indices
    starts = list(range(0, len(indices) - frames + 1, frames))[:max_clips] or [0]
    clips = []
    for s in starts:
        clip = [normalised_frame(seq, t, low, high) for t in indices[s : s + frames]]
        clips.append(np.clip(np.stack([resize_image(f, (size, size)) for f in clip]), 0.0, 1.0))
    return np.stack(clips).astype(np.float32)


def evaluate_fid_command(
    *,
    real: list[str] | str,
    synthetic: list[str] | str,
    out: str = "runs/fid",
    max_frames: int = 128,
    fvd: bool = False,
    max_clips: int = 16,
    wandb_project: str | None = None,
) -> int:
    """FID/KID of frames (and optionally FVD of 16-frame clips) between real and synthetic sequences.

    Frames are percentile-normalised per sequence, clipped to [0, 1] and resized (anti-aliased) to the network
    input (299 px for Inception, 224 px for I3D). Needs the offline weights of `make install-metrics`.

    Args:
        real: real sequence folder(s).
        synthetic: synthetic sequence folder(s).
        out: output folder for report.json / report.md.
        max_frames: frames per sequence used for FID/KID (evenly spaced).
        fvd: also compute FVD on non-overlapping 16-frame clips.
        max_clips: clips per sequence for FVD.
        wandb_project: also log the table to this W&B project.
    """
    from cellgen.metrics.fid import INCEPTION_SIZE, compute_fid_kid
    from cellgen.metrics.weights import WeightsUnavailable

    real_paths, synth_paths = _as_list(real), _as_list(synthetic)
    if not real_paths or not synth_paths:
        raise CellgenInputError(None, "pass --real and --synthetic sequence folders")
    try:
        real_frames = np.concatenate([sequence_frames(p, INCEPTION_SIZE, max_frames) for p in real_paths])
        fake_frames = np.concatenate([sequence_frames(p, INCEPTION_SIZE, max_frames) for p in synth_paths])
        scores = compute_fid_kid(real_frames, fake_frames)
        if fvd:
            from cellgen.metrics.fvd import CLIP_FRAMES, CLIP_SIZE, compute_fvd

            real_clips = np.concatenate([_clips(p, CLIP_FRAMES, CLIP_SIZE, max_clips) for p in real_paths])
            fake_clips = np.concatenate([_clips(p, CLIP_FRAMES, CLIP_SIZE, max_clips) for p in synth_paths])
            scores["FVD"] = compute_fvd(real_clips, fake_clips)
    except WeightsUnavailable as exc:
        raise CellgenInputError(None, str(exc), "run `make install-metrics`") from exc
    except ValueError as exc:
        raise CellgenInputError(None, str(exc)) from exc
    row = {"name": "synthetic vs real", **scores, "real_frames": len(real_frames), "synthetic_frames": len(fake_frames)}
    write_report(out, "fid", [row], list(row), {"real": real_paths, "synthetic": synth_paths}, None, wandb_project)
    print(json.dumps(jsonable(row)))
    return 0


def _morphology_of(paths: list[str], consistency_size: int) -> tuple[dict[str, np.ndarray], float]:
    """Shape table over the best instance masks (SEG > ST > TRA) and the mean temporal consistency (TRA)."""
    from cellgen.data.ctc import read_tiff
    from cellgen.data.segmentation_data import normalised_frame, resize_image, resize_labels, sequence_percentiles
    from cellgen.metrics.morphology import region_table, temporal_consistency

    tables, consistency = [], []
    for path in paths:
        seq = checked_sequence(path)
        masks = seq.instance_mask_paths()
        if not masks:
            raise CellgenInputError(seq.path, "no instance masks (SEG, ST or TRA) to measure")
        tables.extend(region_table(read_tiff(p).astype(np.int64)) for p in masks.values())
        tra = [t for t in seq.frame_indices if t in seq.tra_paths]
        if len(tra) >= 2:
            # Measured at a reduced size: it is a mean over pixels, so the scale barely matters, memory does.
            low, high = sequence_percentiles(seq)
            factor = min(1.0, consistency_size / max(seq.shape))
            shape = (max(1, round(seq.shape[0] * factor)), max(1, round(seq.shape[1] * factor)))
            video = np.stack([resize_image(normalised_frame(seq, t, low, high), shape) for t in tra])
            labels = np.stack([resize_labels(seq.tra_mask(t), shape) for t in tra])
            consistency.append(temporal_consistency(video, labels))
    table = {key: np.concatenate([t[key] for t in tables]) for key in tables[0]}
    return table, float(np.nanmean(consistency)) if consistency else float("nan")


def evaluate_morphology_command(
    *,
    real: list[str] | str,
    synthetic: list[str] | str,
    out: str = "runs/morphology",
    consistency_size: int = 256,
    wandb_project: str | None = None,
) -> int:
    """Do synthetic cells look like real ones? Shape statistics, t/KS tests, violin plots, temporal consistency.

    Args:
        real: real sequence folder(s) (instance masks: SEG where present, else ST, else TRA).
        synthetic: synthetic sequence folder(s).
        out: output folder for report.json, report.md and morphology.png.
        consistency_size: longest side frames are reduced to for the temporal-consistency measure.
        wandb_project: also log the table and plot to this W&B project.
    """
    from cellgen.metrics.morphology import compare_morphology, violin_plots

    real_paths, synth_paths = _as_list(real), _as_list(synthetic)
    if not real_paths or not synth_paths:
        raise CellgenInputError(None, "pass --real and --synthetic sequence folders")
    real_table, real_tc = _morphology_of(real_paths, consistency_size)
    synth_table, synth_tc = _morphology_of(synth_paths, consistency_size)
    stats = compare_morphology(real_table, synth_table)
    rows = [{"name": key, **values} for key, values in stats.items()]
    rows.append({"name": "temporal_consistency", "real_mean": real_tc, "synth_mean": synth_tc})
    plot = violin_plots(real_table, synth_table, Path(out) / "morphology.png")
    columns = ["name", "real_mean", "real_std", "synth_mean", "synth_std", "t_pvalue", "ks_statistic", "ks_pvalue"]
    extra = {"real": real_paths, "synthetic": synth_paths, "cells": [len(real_table["area"]), len(synth_table["area"])]}
    write_report(out, "morphology", rows, columns, extra, {"violins": plot}, wandb_project)
    print(markdown_table(rows, columns))
    print(json.dumps(jsonable({"morphology": stats, "temporal_consistency": {"real": real_tc, "synth": synth_tc}})))
    return 0


def evaluate_mitosis_command(
    *,
    gt: str,
    pred: str,
    spatial_tol: float = 10.0,
    temporal_tol: int = 3,
    rule: str = "hungarian",
    first_frame: int | None = None,
    last_frame: int | None = None,
    relative_tol: float | None = None,
    cell_diameter: float | None = None,
    min_score: float | None = None,
    per_event: str | None = None,
) -> int:
    """Mitosis detection precision/recall/F1 against ground truth; the last line is JSON (precision ... fn).

    ``--spatial_tol`` stays the paper's 10 px; ``--relative_tol 0.5`` instead matches within half a median cell
    diameter, so that movies at other magnifications compare fairly.

    Args:
        gt: a points CSV (t,y,x), an 'x y frame id' list (HeLa mitoses.txt) or a CTC sequence folder.
        pred: detections CSV (t,y,x[,score]) as written by the MitosisDetector.
        spatial_tol: matching radius in pixels (inclusive).
        temporal_tol: matching tolerance in frames (inclusive).
        rule: hungarian (one-to-one) or lenient (an event is found if any detection is near it).
        first_frame: score only events and detections from this frame on.
        last_frame: and up to this frame (inclusive).
        relative_tol: spatial tolerance as a fraction of the median cell diameter (replaces ``spatial_tol``).
        cell_diameter: that diameter in pixels; default: measured on the masks of ``gt`` when it is a CTC folder.
        min_score: score only detections with at least this score: one detect-mitoses run at a low threshold then
            gives the F1 of every higher threshold (local maxima do not depend on the threshold).
        per_event: write a CSV with one row per event (matched, the best score near it, the nearest detection's
            distance and frame offset), computed before ``min_score``: why each event was found or missed.
    """
    from cellgen.data.points import POINTS_FIX, division_points, read_mitosis_points, read_points_csv
    from cellgen.metrics.mitosis import RULES, score_detections

    if rule not in RULES:
        raise CellgenInputError(None, f"--rule must be one of {', '.join(RULES)}, got {rule!r}", "use --rule hungarian")
    if spatial_tol < 0 or temporal_tol < 0:
        raise CellgenInputError(None, "--spatial-tol and --temporal-tol must be >= 0", "pass 0 for exact matches")
    gt_points = division_points(checked_sequence(gt)) if Path(gt).is_dir() else read_mitosis_points(gt)
    if relative_tol is not None:
        spatial_tol, cell_diameter = _relative_tolerance(gt, relative_tol, cell_diameter)
    if not Path(pred).is_file():
        raise CellgenInputError(pred, "predictions file not found", POINTS_FIX)
    try:
        pred_points = read_points_csv(pred)
    except ValueError as exc:
        raise CellgenInputError(pred, str(exc).removeprefix(f"{pred}: "), POINTS_FIX) from exc
    lo = -np.inf if first_frame is None else first_frame
    hi = np.inf if last_frame is None else last_frame
    gt_points = gt_points[(gt_points[:, 0] >= lo) & (gt_points[:, 0] <= hi)]
    pred_points = pred_points[(pred_points[:, 0] >= lo) & (pred_points[:, 0] <= hi)]
    if per_event is not None:
        _write_event_report(per_event, gt_points, pred_points, spatial_tol, temporal_tol, pred)
    if min_score is not None:
        if pred_points.shape[1] < 4 and len(pred_points):
            raise CellgenInputError(pred, "--min_score needs a score column (t,y,x,score)", POINTS_FIX)
        pred_points = pred_points[pred_points[:, 3] >= min_score] if len(pred_points) else pred_points
    metrics = score_detections(gt_points, pred_points, spatial_tol, temporal_tol, rule)
    print(f"{len(gt_points)} events in {gt}, {len(pred_points)} detections in {pred}")
    extra = {} if relative_tol is None else {"relative_tol": relative_tol, "cell_diameter": round(cell_diameter, 2)}
    print(json.dumps({**metrics, "spatial_tol": spatial_tol, "temporal_tol": temporal_tol, "rule": rule, **extra}))
    return 0


def _write_event_report(
    path: str, gt: np.ndarray, pred: np.ndarray, spatial_tol: float, temporal_tol: int, pred_path: str
) -> None:
    """The per-event CSV of :func:`~cellgen.metrics.mitosis.per_event_report`."""
    import csv

    from cellgen.data.points import POINTS_FIX
    from cellgen.metrics.mitosis import per_event_report

    if len(pred) and pred.shape[1] < 4:
        raise CellgenInputError(pred_path, "--per_event needs a score column (t,y,x,score)", POINTS_FIX)
    rows = per_event_report(gt, pred, spatial_tol, temporal_tol)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["t", "y", "x", "matched", "best_score", "distance", "dt"])
        writer.writeheader()
        writer.writerows(rows)


def _relative_tolerance(gt: str, fraction: float, diameter: float | None) -> tuple[float, float]:
    """(spatial tolerance in pixels, cell diameter): ``fraction`` of the given or measured median cell diameter."""
    from cellgen.data.mitosis_data import median_cell_diameter

    if fraction <= 0:
        raise CellgenInputError(None, f"--relative_tol must be positive, got {fraction}", "e.g. 0.5: half a cell")
    if diameter is None and Path(gt).is_dir():
        seq = checked_sequence(gt)
        diameter = median_cell_diameter(seq, seq.frame_indices)
    if diameter is None or diameter <= 0:
        raise CellgenInputError(gt, "no cell diameter for --relative_tol", "pass --cell_diameter PIXELS")
    return fraction * diameter, float(diameter)


EVALUATE = {
    "ctc": evaluate_ctc_command,
    "downstream": evaluate_downstream_command,
    "fid": evaluate_fid_command,
    "morphology": evaluate_morphology_command,
    "mitosis": evaluate_mitosis_command,
    "video": evaluate_video_command,
}
