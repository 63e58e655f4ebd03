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
        raise CellgenInputError(None, f"--size must look like 256x256, got {size!r}", "e.g. --size 128x128") from exc
    if height < 16 or width < 16:
        raise CellgenInputError(None, f"--size {size} is too small", "at least 16x16")
    return height, width


TEXTURES = ("ddpm", "statistical", "exemplar")
SAMPLERS = ("ddim", "ddpm")


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present; an explicit ``cuda`` on a machine without one is refused in one line."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CellgenInputError(None, f"--device {device}: no CUDA device on this machine", "use --device cpu")
        return device
    raise CellgenInputError(None, f"--device must be auto, cpu or cuda, got {device!r}", "use --device auto")


def _check_options(out_dir: Path, num_sequences: int, frames: int, cells: int, first_index: int, sampler: str | None):
    for name, value, least in (("frames", frames, 1), ("num-sequences", num_sequences, 1), ("cells", cells, 1)):
        if value < least:
            raise CellgenInputError(None, f"--{name} must be at least {least}, got {value}", f"pass --{name} {least}")
    if first_index < 0:
        raise CellgenInputError(None, f"--first-index must be >= 0, got {first_index}", "sequence 01 is index 0")
    if sampler is not None and sampler not in SAMPLERS:
        raise CellgenInputError(None, f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}", "use ddim")
    if out_dir.exists() and not out_dir.is_dir():
        raise CellgenInputError(out_dir, "--out is a file, not a folder", "pass a folder, e.g. data/synthetic")


def shape_state_from(source: str) -> dict:
    """A fitted shape model's dict from a BVDM checkpoint, a shape-model JSON or CTC sequence folder(s)."""
    from cellgen.models.checkpoint import read_checkpoint
    from cellgen.synth.shape_model import ShapeModel

    paths = [Path(p.strip()).expanduser() for p in source.split(",") if p.strip()]
    missing = [p for p in paths if not p.exists()]
    if not paths or missing:
        raise CellgenInputError(
            missing[0] if missing else None,
            "--shape-from not found",
            "pass a BVDM checkpoint, a shape-model .json or CTC sequence folder(s)",
        )
    if all(p.is_dir() for p in paths):
        tqdm.write(f"fitting a shape model on {', '.join(map(str, paths))}")
        return ShapeModel.fit(paths).to_dict()
    if len(paths) > 1:
        raise CellgenInputError(None, "--shape-from takes one file or one or more folders", "pass one of them")
    path = paths[0]
    if path.suffix == ".json":
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CellgenInputError(path, f"is not a readable shape-model JSON ({exc})", "write it again") from exc
    else:
        state = read_checkpoint(path, expect_class="cellgen.models.bvdm.BVDM").get("bvdm_shape_model")
    if not isinstance(state, dict):
        raise CellgenInputError(path, "holds no fitted shape model", "pass a BVDM checkpoint trained for a step")
    ShapeModel.from_dict(state)  # validated here, in one line, rather than deep inside synthesis
    return state


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
    later_sampler: str | None = None,
    later_steps: int | None = None,
    texture: str | None = None,
    shape_from: str | None = None,
    edge_halo: bool | None = None,
    device: str = "auto",
    overwrite: bool = False,
    force: bool = False,
) -> int:
    """Write N synthetic annotated sequences (CTC layout + GIF previews) from a BVDM checkpoint.

    Sequence i (0-based, counting from first_index) always uses the same seed, whatever the batch size,
    device or how many sequences are asked for, so sequences can be made in parts or on several machines.
    A rerun skips sequences already written with the same settings (a killed run continues where it stopped).

    Args:
        ckpt: BVDM checkpoint written by `cellgen fit --config configs/bvdm.yaml`.
        out: output dataset folder (receives 01, 01_GT, 02, ...).
        num_sequences: number of sequences to write.
        frames: frames per sequence.
        size: frame size as HxW, e.g. 512x512.
        cells: cells in the first frame.
        divisions: true: divide at the rate fitted on the training data; false: none; N: exactly N divisions
            (refused when fewer can be placed).
        first_index: index of the first sequence (its folder is first_index + 1).
        sampler: first-frame sampler override: ddim (fast, default of the checkpoint) or ddpm (the paper's).
        later_sampler: later-frame sampler override: ddpm (the paper's ancestral steps) or ddim.
        later_steps: later-frame DDIM steps from T_{f!=0} to 0 (with --later-sampler ddim; e.g. 3 on a CPU).
        texture: override of the checkpoint's texture: ddpm (BVDM), statistical (no DDPM, the ablation row) or
            exemplar (real training cells' textures on the synthetic masks, no DDPM).
        shape_from: take the shape model (shapes, motion, colonies, brightness, microscope) from elsewhere and
            keep the checkpoint's networks: another BVDM checkpoint, a shape-model JSON, or CTC sequence folder(s)
            (comma-separated) to fit one on now. For refitting after an upgrade of cellgen's statistics without
            retraining the networks, or for mixing (e.g. a few-shot shape model with fully trained networks).
        edge_halo: override of the checkpoint's edge_halo: paint the halo fitted outside the training masks.
        device: auto, cpu or cuda.
        overwrite: replace sequences that cellgen wrote before (they carry a .cellgen.json marker).
        force: with overwrite, replace existing sequences even without the marker (e.g. real data).
    """
    from cellgen.callbacks.ctc_writer import preview_path, write_synthetic_sequence
    from cellgen.data.ownership import check_replaceable, sequence_state
    from cellgen.models.bvdm import load_bvdm

    out_dir = Path(out)
    _check_options(out_dir, num_sequences, frames, cells, first_index, sampler)
    if later_sampler is not None and later_sampler not in SAMPLERS:
        raise CellgenInputError(
            None, f"--later-sampler must be one of {', '.join(SAMPLERS)}, got {later_sampler!r}", "use ddpm"
        )
    if texture is not None and texture not in TEXTURES:
        raise CellgenInputError(None, f"--texture must be one of {', '.join(TEXTURES)}, got {texture!r}", "use ddpm")
    if later_steps is not None and later_steps < 1:
        raise CellgenInputError(None, f"--later-steps must be at least 1, got {later_steps}", "pass --later-steps 3")
    height, width = _parse_size(size)
    target = resolve_device(device)
    ckpt_path = Path(ckpt).expanduser()
    settings = {"ckpt": str(ckpt_path.resolve()), "frames": frames, "size": f"{height}x{width}", "cells": cells}
    settings |= {"divisions": divisions, "sampler": sampler, "later_sampler": later_sampler}
    settings |= {"later_steps": later_steps, "texture": texture}
    if shape_from:
        settings["shape_from"] = shape_from
    if edge_halo is not None:
        settings["edge_halo"] = edge_halo
    todo = []
    for i in range(first_index, first_index + num_sequences):
        name = f"{i + 1:02d}"
        state = sequence_state(out_dir, name, settings)
        if state == "done" and not overwrite and preview_path(out_dir, i).is_file():
            tqdm.write(f"{out_dir / name}: already written with these settings, skipped")
            continue
        if state == "other" and not overwrite:
            raise CellgenInputError(
                out_dir / name, "was written with other settings", "pass --overwrite true to replace it"
            )
        if state != "done":
            check_replaceable(out_dir, name, overwrite, force)
        todo.append(i)
    written = []
    if todo:
        model = load_bvdm(ckpt_path, map_location=target)
        if shape_from:
            model.shape_state = shape_state_from(shape_from)
        overrides = {"frames": frames, "height": height, "width": width, "cells": cells, "divisions": divisions}
        if sampler:
            overrides["first_frame_sampler"] = sampler
        if later_sampler:
            overrides["later_frame_sampler"] = later_sampler
        if later_steps is not None:
            overrides["later_frame_steps"] = later_steps
        if texture:
            overrides["texture"] = texture
        if edge_halo is not None:
            overrides["edge_halo"] = edge_halo
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if target.startswith("cuda")
            else torch.autocast("cpu", enabled=False)
        )
        with autocast:
            for i in tqdm(todo, desc="synthesising", unit="seq"):
                sequence = model.synthesize(i, progress=True, **overrides)
                parents = {t.parent for t in sequence.tracks.values() if t.parent}
                if type(divisions) is int and len(parents) != divisions:
                    raise CellgenInputError(
                        out_dir / f"{i + 1:02d}",
                        f"only {len(parents)} of the {divisions} requested divisions fit in {frames} frames with "
                        f"{cells} cells; nothing written for it",
                        "raise --frames or --cells, or ask for fewer --divisions",
                    )
                path = write_synthetic_sequence(
                    out_dir, i, sequence, True, force, "synthesize", settings, pixel_size=model.pixel_size
                )
                written.append({"path": str(path), "tracks": len(sequence.tracks), "divisions": len(parents)})
                tqdm.write(f"{path}: {len(sequence.tracks)} tracks, preview {preview_path(out_dir, i)}")
    skipped = num_sequences - len(todo)
    print(json.dumps({"command": "synthesize", "out": str(out_dir), "sequences": written, "skipped": skipped}))
    return 0
