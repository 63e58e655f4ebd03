"""``cellgen sample``: N videos of any length from a VideoDiffusion / FlowVideoDiffusion checkpoint.

Writes ``sample_XXXX.tif`` (T, H, W) float32 in [0, 1] (and ``_u.tif`` / ``_v.tif`` flow for the flow model),
``sample_XXXX.gif``, one ``grid.gif`` of all samples and ``samples.json`` with the settings; every file is written
atomically. Sample ``i`` is drawn from its own seed (``seed * 1_000_003 + i``), so it is the same whatever ``--num``
or ``--batch_size``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cellgen.data.atomic import atomic_file
from cellgen.data.errors import CellgenInputError


def load_video_model(ckpt: str, device: str = "cpu") -> Any:
    """A :class:`~cellgen.models.video_diffusion.VideoDiffusion` (or subclass) rebuilt from its checkpoint, in eval
    mode; a checkpoint of another model is refused in one line."""
    from cellgen.models.checkpoint import checkpoint_class, read_checkpoint
    from cellgen.models.flow_video_diffusion import FlowVideoDiffusion
    from cellgen.models.video_diffusion import VideoDiffusion

    state = read_checkpoint(ckpt)
    found = checkpoint_class(state) or ""
    has_flow = any(k == "flow_range" for k in state["state_dict"])
    classes = {"VideoDiffusion": VideoDiffusion, "FlowVideoDiffusion": FlowVideoDiffusion}
    cls = classes.get(found.rsplit(".", 1)[-1]) if found else (FlowVideoDiffusion if has_flow else VideoDiffusion)
    if cls is None:
        raise CellgenInputError(ckpt, f"checkpoint of {found.rsplit('.', 1)[-1]}, not a video diffusion model")
    return cls.load_from_checkpoint(ckpt, map_location=device).eval()


def generate_videos(
    model: Any,
    indices: range | list[int],
    num_frames: int | None = None,
    batch_size: int = 8,
    steps: int | None = None,
    eta: float | None = None,
    overlap: int | None = None,
    guidance_weight: float | None = None,
    ema: bool = True,
) -> dict[str, np.ndarray]:
    """Generate the videos of global sample ``indices`` in batches; see ``VideoDiffusion.generate_frames``.

    Returns:
        ``{"video": (N, T, H, W)}`` in [0, 1], plus ``"flow": (N, 2, T-1, H, W)`` for the flow model.
    """
    parts: dict[str, list[np.ndarray]] = {}
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        generators = model.sample_generators(indices[start : start + batch_size])
        videos = model.generate_frames(generators, num_frames, steps, eta, overlap, guidance_weight, ema)
        for key, value in model.outputs(videos).items():
            parts.setdefault(key, []).append(value.numpy())
    out = {key: np.concatenate(values) for key, values in parts.items()}
    out["video"] = out["video"][:, 0]
    return out


def sample(
    *,
    ckpt: str,
    out: str = "runs/samples",
    num: int = 16,
    frames: int | None = None,
    steps: int | None = None,
    eta: float | None = None,
    seed: int | None = None,
    batch_size: int = 8,
    overlap: int | None = None,
    guidance_weight: float | None = None,
    ema: bool = True,
    columns: int = 4,
    fps: float = 5.0,
    device: str = "auto",
) -> int:
    """Write N generated videos (TIFF stacks + GIFs) and a GIF grid of them; the last line printed is JSON.

    Args:
        ckpt: a VideoDiffusion or FlowVideoDiffusion checkpoint (e.g. runs/video_diffusion/checkpoints/last.ckpt).
        out: output folder.
        num: videos to write (sample indices 0 .. num-1).
        frames: frames per video (default: the model's ``predict_frames`` or ``num_frames``); more than the model's
            ``num_frames`` extends each video chunk by chunk with reconstruction guidance.
        steps: DDIM steps per chunk (default: the model's ``sampling_steps``).
        eta: DDIM stochasticity (default: the model's ``eta``; 0 = deterministic given the seed).
        seed: base seed (default: the model's ``seed``).
        batch_size: videos per network call (does not change the samples).
        overlap: frames each new chunk is conditioned on (default: the model's ``extend_overlap``).
        guidance_weight: reconstruction-guidance weight w_r (default: the model's ``guidance_weight``).
        ema: sample with the EMA weights (default) or the live ones.
        columns: tiles per row of grid.gif.
        fps: GIF frame rate.
        device: auto, cpu or cuda.
    """
    from cellgen.callbacks.previews import to_uint8, video_grid, write_gif
    from cellgen.callbacks.video_writer import write_video_sample
    from cellgen.commands.synthesize import resolve_device

    for name, value in (("num", num), ("batch_size", batch_size), ("steps", steps or 1), ("frames", frames or 1)):
        if value < 1:
            raise CellgenInputError(None, f"--{name} must be at least 1, got {value}", f"pass --{name} 1 or more")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CellgenInputError(out_dir, "--out is a file, not a folder", "pass a folder, e.g. runs/samples")
    model = load_video_model(ckpt, resolve_device(device))
    if seed is not None:
        model.hparams.seed = seed
    began = time.perf_counter()
    try:
        result = generate_videos(model, range(num), frames, batch_size, steps, eta, overlap, guidance_weight, ema)
    except ValueError as exc:  # an overlap the model cannot take, a DDIM step count beyond the chain
        raise CellgenInputError(ckpt, str(exc)) from exc
    seconds = time.perf_counter() - began
    videos, flows = result["video"], result.get("flow")
    for i, video in enumerate(videos):
        write_video_sample(out_dir, i, video, flows[i] if flows is not None else None, fps)
    grid = write_gif(out_dir / "grid.gif", video_grid([to_uint8(v) for v in videos], columns), fps=fps)
    hp = model.hparams
    summary = {
        "ckpt": str(ckpt),
        "out": str(out_dir),
        "videos": len(videos),
        "shape": list(videos.shape[1:]),
        "steps": steps or hp.sampling_steps,
        "eta": hp.eta if eta is None else eta,
        "seed": hp.seed,
        "ema": ema,
        "guidance_weight": hp.guidance_weight if guidance_weight is None else guidance_weight,
        "overlap": overlap or hp.extend_overlap or hp.num_frames // 2,
        "seconds": round(seconds, 1),
        "grid": str(grid),
    }
    with atomic_file(out_dir / "samples.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0
