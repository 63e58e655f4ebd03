"""``cellgen synthesize``: N new annotated sequences from a trained BVDM checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from cellgen.data.errors import CellgenInputError


def _parse_size(size: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise CellgenInputError(None, f"--size must look like 256x256, got {size!r}") from exc
    if height < 16 or width < 16:
        raise CellgenInputError(None, f"--size {size} is too small (at least 16x16)")
    return height, width


def synthesize(
    ckpt: str,
    out: str,
    num_sequences: int = 1,
    frames: int = 32,
    size: str = "256x256",
    cells: int = 8,
    divisions: bool | int = True,
    first_index: int = 0,
    sampler: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> int:
    """Write N synthetic annotated sequences (CTC layout + GIF previews) from a BVDM checkpoint.

    Sequence i (0-based, counting from first_index) always uses the same seed, whatever the batch size,
    device or how many sequences are asked for, so sequences can be made in parts or on several machines.

    Args:
        ckpt: BVDM checkpoint written by `cellgen fit --config configs/bvdm.yaml`.
        out: output dataset folder (receives 01, 01_GT, 02, ...).
        num_sequences: number of sequences to write.
        frames: frames per sequence.
        size: frame size as HxW, e.g. 512x512.
        cells: cells in the first frame.
        divisions: true: divide at the rate fitted on the training data; false: none; N: exactly N divisions.
        first_index: index of the first sequence (its folder is first_index + 1).
        sampler: first-frame sampler override: ddim (fast, default of the checkpoint) or ddpm (the paper's).
        device: auto, cpu or cuda.
        overwrite: replace existing sequences.
    """
    from cellgen.callbacks.ctc_writer import write_synthetic_sequence
    from cellgen.models.bvdm import load_bvdm

    if frames < 1:
        raise CellgenInputError(None, f"--frames must be at least 1, got {frames}")
    if num_sequences < 1:
        raise CellgenInputError(None, f"--num-sequences must be at least 1, got {num_sequences}")
    if cells < 1:
        raise CellgenInputError(None, f"--cells must be at least 1, got {cells}")
    height, width = _parse_size(size)
    out_dir = Path(out)
    if not overwrite:
        for i in range(first_index, first_index + num_sequences):
            if (out_dir / f"{i + 1:02d}").exists():
                raise CellgenInputError(out_dir / f"{i + 1:02d}", "already exists", "pass --overwrite true")
    target = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    model = load_bvdm(ckpt, map_location=target)
    overrides = {"frames": frames, "height": height, "width": width, "cells": cells, "divisions": divisions}
    if sampler:
        overrides["first_frame_sampler"] = sampler
    written = []
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if target == "cuda" else torch.autocast("cpu", enabled=False)
    )
    with autocast:
        for i in tqdm(range(first_index, first_index + num_sequences), desc="synthesising", unit="seq"):
            sequence = model.synthesize(i, progress=True, **overrides)
            path = write_synthetic_sequence(out_dir, i, sequence, overwrite, model.pixel_size)
            parents = {t.parent for t in sequence.tracks.values() if t.parent}
            written.append({"path": str(path), "tracks": len(sequence.tracks), "divisions": len(parents)})
            tqdm.write(f"{path}: {len(sequence.tracks)} tracks, preview {path.parent / (path.name + '_preview.gif')}")
    print(json.dumps({"command": "synthesize", "out": str(out_dir), "sequences": written}))
    return 0
