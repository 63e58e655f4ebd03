"""``cellgen detect-mitoses``: apply a trained MitosisDetector checkpoint to any movie, no annotation needed.

The checkpoint carries everything but the movie (``MitosisDetector.on_save_checkpoint``): the window length k, the
threshold calibrated on its training frames, the working scale, the normalisation and the cell diameter of the
training movie. A movie at another magnification is rescaled so that its cells have the training size when its cell
diameter is given (``--cell_diameter``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cellgen.data.errors import CellgenInputError

PREVIEW_SIDE = 480  # longest side of the preview GIF in pixels


def detect_mitoses(
    ckpt: str,
    movie: str,
    out: str = "mitoses.csv",
    preview: str | None = None,
    threshold: float | None = None,
    cell_diameter: float | None = None,
    downscale: float | None = None,
    flip_tta: bool | None = None,
    threads: int | None = None,
    edge_padding: str | None = None,
) -> int:
    """Detect mitoses in a movie; write ``t,y,x,score`` (original frames and pixels), a GIF preview and one JSON line.

    Args:
        ckpt: a MitosisDetector checkpoint (``cellgen fit --config configs/mitosis_detector_heatmap.yaml``; train on
            all annotated frames with ``--data.init_args.train_frames`` = the movie length).
        movie: a folder of raw frames ``tTTT.tif`` or one TIFF stack (T, H, W).
        out: the CSV to write (atomically: a temporary file renamed into place).
        preview: the GIF with detections circled; default: ``out`` with ``.gif``; ``none`` writes none.
        threshold: detection threshold; default: the one calibrated on the training frames.
        cell_diameter: median cell diameter of this movie in its pixels; rescales it to the training cell size.
        downscale: working scale factor; default: the checkpoint's (or the one ``cell_diameter`` implies).
        flip_tta: average the 4 flips of each window (4x slower); default: the checkpoint's setting.
        threads: torch CPU threads (default: torch's choice).
        edge_padding: ``none``, ``replicate`` or ``reflect``: how the first and last frames are covered by windows;
            default: the checkpoint's (``replicate`` for checkpoints saved before the setting existed).
    """
    import torch

    from cellgen.callbacks.previews import write_gif
    from cellgen.data.event_frames import load_movie
    from cellgen.data.points import write_points_csv
    from cellgen.metrics.mitosis_detection import EDGE_PADDINGS
    from cellgen.models.checkpoint import read_checkpoint
    from cellgen.models.mitosis_detector import INFERENCE_KEY, MitosisDetector

    started = time.perf_counter()
    if threads is not None:
        torch.set_num_threads(threads)
    state = read_checkpoint(ckpt, expect_class="MitosisDetector")
    if "sequence_length" not in (state.get("hyper_parameters") or {}):
        raise CellgenInputError(ckpt, "not a MitosisDetector checkpoint (no sequence_length)")
    settings = dict(state.get(INFERENCE_KEY) or {})
    del state
    model = MitosisDetector.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    threshold = settings.get("threshold") if threshold is None else threshold
    if threshold is None:
        raise CellgenInputError(
            ckpt, "checkpoint has no calibrated threshold (saved before this version)", "pass --threshold"
        )
    scale = _working_scale(settings, downscale, cell_diameter, ckpt)
    if flip_tta is not None:
        model.hparams.flip_tta = flip_tta
    if edge_padding is not None:
        if edge_padding not in EDGE_PADDINGS:
            raise CellgenInputError(None, f"--edge_padding must be one of {EDGE_PADDINGS}, got {edge_padding!r}")
        model.hparams.edge_padding = edge_padding
    volume = load_movie(movie, scale)
    found = model.detect_volume(volume, float(threshold))
    csv_path = write_points_csv(out, found)
    gif = None
    if (preview or "").lower() != "none":
        gif = write_gif(preview or Path(out).with_suffix(".gif"), preview_frames(movie_frames(volume), found, volume))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "movie": str(movie),
                "csv": str(csv_path),
                "preview": None if gif is None else str(gif),
                "frames": len(volume.indices),
                "detections": len(found),
                "k": int(model.hparams.sequence_length),
                "threshold": float(threshold),
                "downscale": scale,
                "edge_padding": model.hparams.edge_padding,
                "seconds": round(seconds, 2),
                "frames_per_s": round(len(volume.indices) / seconds, 3),
            }
        )
    )
    return 0


def _working_scale(settings: dict, downscale: float | None, cell_diameter: float | None, ckpt: str) -> float:
    """The scale factor to apply: explicit, or the one that gives the training cell size, or the checkpoint's."""
    if downscale is not None:
        return float(downscale)
    if cell_diameter is not None:
        trained = settings.get("cell_diameter")
        if not trained:
            raise CellgenInputError(ckpt, "checkpoint knows no training cell diameter", "pass --downscale instead")
        if cell_diameter <= 0:
            raise CellgenInputError(None, f"--cell_diameter must be positive, got {cell_diameter}")
        return float(min(1.0, trained / cell_diameter))
    return float(settings.get("downscale", 1.0))


def movie_frames(volume) -> np.ndarray:
    """The working-resolution frames (T, h, w) as uint8 for a preview."""
    return (np.clip(volume.frames, 0, 1) * 255).astype(np.uint8)


def preview_frames(frames: np.ndarray, detections: np.ndarray, volume, side: int = PREVIEW_SIDE) -> np.ndarray:
    """(T, h, w) uint8 -> (T, h', w', 3) RGB with a red circle around each detection in its frame and the next.

    ``detections`` are (M, 4) original (t, y, x, score); circles are drawn at the preview's scale.
    """
    from skimage.draw import circle_perimeter
    from skimage.transform import resize

    factor = min(1.0, side / max(frames.shape[1:]))
    size = (max(1, round(frames.shape[1] * factor)), max(1, round(frames.shape[2] * factor)))
    small = frames if factor == 1.0 else (resize(frames, (len(frames), *size), preserve_range=True) + 0.5)
    rgb = np.repeat(small.astype(np.uint8)[..., None], 3, axis=-1)
    position = {frame: i for i, frame in enumerate(volume.indices)}
    per_pixel = (size[0] / volume.full_shape[0], size[1] / volume.full_shape[1])
    radius = max(4, round(0.03 * max(size)))
    for t, y, x, _ in detections:
        i = position.get(int(round(t)))
        if i is None:
            continue
        cy, cx = round(y * per_pixel[0]), round(x * per_pixel[1])
        for r in (radius, radius + 1):
            rr, cc = circle_perimeter(cy, cx, r, shape=size)
            for j in (i, i + 1):
                if j < len(rgb):
                    rgb[j, rr, cc] = (255, 40, 40)
    return rgb
