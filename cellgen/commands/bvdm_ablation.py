"""``cellgen bvdm-ablation``: BVDM Table 2 as one command (SDEdit start steps -> downstream SEG/TRA/DET, FID).

BVDM (Yilmaz et al. 2024, Table 2) varies the SDEdit start step of a cell's first frame (T_{f=0}) and of later
frames (T_{f!=0}) and reports what a segmenter trained on the synthetic data achieves on real data. Here every
grid cell synthesises its own sequences from one checkpoint (same seeds, same masks: only the texture changes),
trains the downstream segmenter under one budget (``configs/downstream.yaml``) and scores it on the real test
sequence, plus FID of the synthetic frames against the test frames. A ``statistical`` row paints the same masks,
brightness, background and noise with the fitted statistical texture and no DDPM (a classical simulator), so the
table shows what the DDPM adds. An ``exemplar`` row does the same with real training cells' textures re-shaped
onto the masks (``texture="exemplar"``, also no DDPM), the strongest texture without a network.

Each finished cell is journalled in ``OUT/runs.jsonl``; a rerun skips it (crash-safe, and a grid can be grown).
Writes ``OUT/ablation.csv``, one heat map per measure (``OUT/ablation_{SEG,TRA,DET,FID}.png``) and prints one
JSON line.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from cellgen.commands.downstream import DownstreamBudget
from cellgen.data.errors import CellgenInputError

SCORES = ("SEG", "TRA", "DET")


def _journal(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: that cell is simply redone
            done[row["cell"]] = row
    return done


def _has_exemplars(shape_state: dict | None) -> bool:
    """Whether a shape model's dict carries an exemplar bank (models fitted before exemplars existed do not)."""
    appearance = (shape_state or {}).get("appearance") or {}
    return bool(appearance.get("exemplar_textures"))


def _heat_map(path: Path, rows: list[dict], first: list[int], later: list[int], key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.full((len(first), len(later)), np.nan)
    for row in rows:
        if row.get("texture") == "ddpm" and row.get(key) is not None:
            grid[first.index(row["first_frame_step"]), later.index(row["later_frame_step"])] = row[key]
    fig, ax = plt.subplots(figsize=(1.2 * len(later) + 2.5, 1.0 * len(first) + 1.5))
    lower_is_better = key == "FID"
    cmap = "viridis_r" if lower_is_better else "viridis"
    image = ax.imshow(grid, cmap=cmap, vmin=np.nanmin(grid) if np.isfinite(grid).any() else 0, vmax=None)
    ax.set_xticks(range(len(later)), [str(v) for v in later])
    ax.set_yticks(range(len(first)), [str(v) for v in first])
    ax.set_xlabel("T_{f!=0} (later frames)")
    ax.set_ylabel("T_{f=0} (first frame)")
    low, high = image.get_clim()
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            shade = (value - low) / max(high - low, 1e-12)  # where the colour map is light, dark text reads
            light = shade < 0.4 if lower_is_better else shade > 0.6
            text = f"{value:.1f}" if lower_is_better else f"{value:.3f}"
            ax.text(j, i, text, ha="center", va="center", color="k" if light else "w", fontsize=9)
    title = (
        "FID vs the test frames (lower is better)" if lower_is_better else f"downstream {key} (trained on synthetic)"
    )
    baselines = [
        f"{label}: {row[key]:{'.1f' if lower_is_better else '.3f'}}"
        for texture, label in (("statistical", "no DDPM, statistical"), ("exemplar", "no DDPM, exemplars"))
        for row in rows
        if row.get("texture") == texture and row.get(key) is not None
    ]
    if baselines:
        title += "\n" + "; ".join(baselines)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bvdm_ablation(
    *,
    ckpt: str,
    test: str,
    out: str = "runs/bvdm_ablation",
    first_steps: list[int] = [100, 200, 400, 600],  # noqa: B006 (jsonargparse needs a literal default)
    later_steps: list[int] = [0, 10, 30, 50],  # noqa: B006
    statistical: bool = True,
    exemplar: bool = True,
    num_sequences: int = 1,
    frames: int = 24,
    size: str = "512x512",
    cells: int = 12,
    budget: DownstreamBudget = DownstreamBudget(),  # noqa: B008 (typed config group, see configs/downstream.yaml)
    fid: bool = True,
    fid_frames: int = 48,
    seed: int = 0,
    device: str = "auto",
    shape_from: str | None = None,
    later_sampler: str | None = None,
    later_sampler_steps: int | None = None,
) -> int:
    """Grid of SDEdit start steps (BVDM Table 2) plus a no-DDPM row, scored downstream on a real test sequence.

    Args:
        ckpt: BVDM checkpoint (`cellgen fit --config configs/bvdm.yaml`).
        test: real test sequence with ground truth, e.g. data/Fluo-N2DH-GOWT1/02.
        out: output folder (journal, CSV, heat map, one sub-folder per grid cell).
        first_steps: T_{f=0} values (paper: 100-600; default 200).
        later_steps: T_{f!=0} values (paper: 0-50; default 10).
        statistical: add the row without the DDPM (fitted statistical texture).
        exemplar: add the row with real cells' textures and no DDPM (skipped, with a note, when the shape model
            holds no exemplars: refit it with --shape_from).
        num_sequences: synthetic sequences per grid cell (the same seeds in every cell).
        frames: frames per sequence.
        size: frame size HxW.
        cells: cells in the first frame.
        budget: downstream training budget, the same for every cell (use --config configs/downstream.yaml).
        fid: also compute FID of synthetic vs test frames (needs `make install-metrics`).
        fid_frames: frames per sequence for FID.
        seed: downstream training seed.
        device: auto, cpu or cuda for synthesis.
        shape_from: shape model from elsewhere (as `cellgen synthesize --shape-from`), networks from --ckpt.
        later_sampler: later-frame sampler override (ddpm, the paper's; ddim with few steps on a CPU).
        later_sampler_steps: later-frame steps with --later_sampler ddim.
    """
    import torch

    from cellgen.callbacks.ctc_writer import write_synthetic_sequence
    from cellgen.commands.downstream import run_downstream
    from cellgen.commands.synthesize import _parse_size, shape_state_from
    from cellgen.models.bvdm import load_bvdm

    if not first_steps or not later_steps:
        raise CellgenInputError(None, "--first_steps and --later_steps need at least one value each")
    height, width = _parse_size(size)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    journal_path = out_dir / "runs.jsonl"
    done = _journal(journal_path)
    target = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    model = load_bvdm(ckpt, map_location=target)
    if shape_from:
        model.shape_state = shape_state_from(shape_from)
    grid = [("ddpm", f0, fl) for f0 in first_steps for fl in later_steps]
    if statistical:
        grid.append(("statistical", 0, 0))
    if exemplar and _has_exemplars(model.shape_state):
        grid.append(("exemplar", 0, 0))
    elif exemplar:
        print("no exemplar row: the shape model holds no exemplar textures (refit it with --shape_from)", flush=True)
    common = {"frames": frames, "height": height, "width": width, "cells": cells}
    sampling = {"later_frame_sampler": later_sampler, "later_frame_steps": later_sampler_steps}
    sampling = {k: v for k, v in sampling.items() if v is not None}
    settings = {**common, "num_sequences": num_sequences, "ckpt": str(Path(ckpt).resolve()), "test": test}
    settings.update(shape_from=shape_from, **sampling)
    settings.update(budget=budget.__dict__, seed=seed, fid=fid)
    settings = json.loads(json.dumps(settings))  # as the journal stores it, so a rerun compares like with like
    rows = []
    for texture, f0, fl in grid:
        cell = texture if texture != "ddpm" else f"f0_{f0}_fl_{fl}"
        if cell in done and done[cell].get("settings") == settings:
            rows.append(done[cell])
            print(f"{cell}: done before (journal)", flush=True)
            continue
        start = time.perf_counter()
        synth_dir = out_dir / cell / "synthetic"
        overrides = {**common, **sampling, "texture": texture, "first_frame_step": f0 or 200, "later_frame_step": fl}
        paths = []
        for i in range(num_sequences):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=target == "cuda"):
                sequence = model.synthesize(i, progress=True, **overrides)
            written = write_synthetic_sequence(
                synth_dir, i, sequence, overwrite=True, command="bvdm-ablation", pixel_size=model.pixel_size
            )
            paths.append(str(written))
        synth_s = time.perf_counter() - start
        row = run_downstream(paths, test, str(out_dir / cell / "downstream"), budget, seed, cell)
        result = {
            "cell": cell,
            "texture": texture,
            "first_frame_step": f0 if texture == "ddpm" else None,
            "later_frame_step": fl if texture == "ddpm" else None,
            **{k: row.get(k) for k in SCORES},
            "synthesis_s": round(synth_s, 1),
            "downstream_s": row["wall_s"],
            "sequences": paths,
            "settings": settings,
        }
        if fid:
            result["FID"] = _fid(test, paths, fid_frames)
        with journal_path.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        rows.append(result)
        print(f"{cell}: " + ", ".join(f"{k} {result.get(k)}" for k in (*SCORES, "FID")), flush=True)
    columns = ["cell", "texture", "first_frame_step", "later_frame_step", *SCORES, "FID", "synthesis_s"]
    with (out_dir / "ablation.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for key in (*SCORES, "FID"):
        if not any(r.get(key) is not None for r in rows):
            continue  # e.g. FID when --fid false
        _heat_map(out_dir / f"ablation_{key}.png", rows, list(first_steps), list(later_steps), key)
    best = max((r for r in rows if r.get("SEG") is not None), key=lambda r: r["SEG"], default=None)
    summary = [{k: r.get(k) for k in ("cell", *SCORES, "FID")} for r in rows]
    print(
        json.dumps(
            {
                "command": "bvdm-ablation",
                "rows": summary,
                "best": best and best["cell"],
                "csv": str(out_dir / "ablation.csv"),
            }
        )
    )
    return 0


def _fid(test: str, synthetic: list[str], max_frames: int) -> float | None:
    """FID of synthetic frames against the test frames, or None when the Inception weights are not installed."""
    from cellgen.commands.evaluate import sequence_frames
    from cellgen.metrics.fid import INCEPTION_SIZE, compute_fid_kid
    from cellgen.metrics.weights import WeightsUnavailable

    try:
        real = sequence_frames(test, INCEPTION_SIZE, max_frames)
        fake = np.concatenate([sequence_frames(p, INCEPTION_SIZE, max_frames) for p in synthetic])
        return float(compute_fid_kid(real, fake)["FID"])
    except WeightsUnavailable:
        return None
