"""GIF (and MP4 when imageio-ffmpeg is present) previews of videos, optionally with mask outlines."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from skimage.segmentation import find_boundaries

from cellgen.data.atomic import atomic_file


def to_uint8(frames: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Scale a (T, H, W) video to uint8 with robust percentiles over the whole video (no flicker)."""
    frames = np.asarray(frames, dtype=np.float32)
    lo, hi = np.percentile(frames, [low, high])
    return (np.clip((frames - lo) / max(hi - lo, 1e-8), 0, 1) * 255).astype(np.uint8)


def outline_overlay(frames: np.ndarray, masks: np.ndarray, colour: tuple[int, int, int] = (255, 64, 64)) -> np.ndarray:
    """(T, H, W) uint8 frames + (T, H, W) label masks -> (T, H, W, 3) RGB with each cell's outline drawn."""
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    for t in range(len(frames)):
        edges = find_boundaries(masks[t], mode="inner")
        rgb[t][edges] = colour
    return rgb


def gif_frame_delay_ms(fps: float) -> int:
    """Frame delay of a ``fps`` preview in milliseconds, rounded to the GIF's 10 ms steps (at least 20 ms,
    below which browsers play at 100 ms)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return max(20, int(round(100.0 / fps)) * 10)


def write_gif(path: str | Path, frames: np.ndarray, masks: np.ndarray | None = None, fps: float = 5.0) -> Path:
    """Write a looping GIF atomically; ``frames`` (T, H, W) any dtype or (T, H, W, 3) uint8.

    With ``masks`` the cell outlines are drawn on top, so a reader sees that annotations fit the texture.
    """
    path = Path(path)
    video = frames if frames.ndim == 4 else to_uint8(frames)
    if masks is not None and video.ndim == 3:
        video = outline_overlay(video, masks)
    with atomic_file(path) as tmp:
        # imageio (pillow plugin) takes the frame delay in milliseconds; GIF stores it in 10 ms units.
        imageio.mimsave(tmp, list(video), format="GIF", duration=gif_frame_delay_ms(fps), loop=0)
    return path


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 5.0) -> Path | None:
    """Write an MP4 when imageio-ffmpeg is installed; return None otherwise (GIF is always written)."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return None
    video = frames if frames.ndim == 4 else to_uint8(frames)
    imageio.mimsave(str(path), list(video), fps=fps)
    return Path(path)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Concatenate two (T, H, W[, 3]) uint8 videos horizontally (cropped to the shorter, padded to equal height)."""
    frames = min(len(left), len(right))
    height = max(left.shape[1], right.shape[1])

    def pad(v: np.ndarray) -> np.ndarray:
        extra = [(0, 0), (0, height - v.shape[1]), (0, 0)] + [(0, 0)] * (v.ndim - 3)
        return np.pad(v[:frames], extra)

    spacer = np.full((frames, height, gap) + left.shape[3:], 255, np.uint8)
    return np.concatenate([pad(left), spacer, pad(right)], axis=2)


def comparison_still(
    real_sequence: str | Path,
    synthetic_sequence: str | Path,
    frames: tuple[int, ...] = (0, -1),
    size: int = 384,
) -> np.ndarray:
    """An (R, W, 3) uint8 still: rows of [real frame | synthetic frame], both with their TRA outlines.

    For the README's side-by-side figure: a reader sees at a glance whether texture and annotation look real.
    Each frame is centre-cropped to at most ``size`` pixels and scaled on its own percentiles.

    Args:
        real_sequence: a CTC raw-frame folder with ``_GT/TRA`` beside it (e.g. ``.../01``).
        synthetic_sequence: a sequence written by ``cellgen synthesize``.
        frames: frame indices (negative counts from the end) per row.
        size: crop side in pixels.
    """
    from cellgen.data.ctc import CTCSequence
    from cellgen.data.errors import CellgenInputError

    sequences = (CTCSequence(real_sequence), CTCSequence(synthetic_sequence))
    rows = []
    for index in frames:
        pair = []
        for seq in sequences:
            annotated = [f for f in seq.frame_indices if f in seq.tra_paths]  # HeLa 02 has no TRA at t000
            if not annotated:
                raise CellgenInputError(seq.path, "no frame with a TRA mask to preview", "pass an annotated sequence")
            t = annotated[index]
            image, mask = seq.image(t), seq.tra_mask(t)
            h, w = image.shape
            y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
            crop = (slice(y0, y0 + size), slice(x0, x0 + size))
            pair.append(outline_overlay(to_uint8(image[crop][None]), mask[crop][None])[0])
        rows.append(side_by_side(pair[0][None], pair[1][None], gap=6)[0])
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows)[:-6]


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an (H, W[, 3]) uint8 image as PNG, atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        imageio.imwrite(tmp, image, format="PNG")
    return path


def video_grid(videos: list[np.ndarray], columns: int = 4, gap: int = 2) -> np.ndarray:
    """Tile (T, H, W) or (T, H, W, 3) uint8 videos of one shape into one (T, H', W'[, 3]) video, row by row,
    white between tiles (the first ``min(T)`` frames of each); one GIF shows many samples playing together."""
    if not videos:
        raise ValueError("video_grid needs at least one video")
    frames = min(len(v) for v in videos)
    tile = videos[0].shape[1:]
    if any(v.shape[1:] != tile for v in videos):
        raise ValueError(f"videos must share (H, W[, 3]); got {sorted({v.shape[1:] for v in videos})}")
    columns = max(1, min(columns, len(videos)))
    rows = -(-len(videos) // columns)
    height, width = tile[0], tile[1]
    grid = np.full((frames, rows * (height + gap) - gap, columns * (width + gap) - gap, *tile[2:]), 255, np.uint8)
    for i, video in enumerate(videos):
        y, x = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[:, y : y + height, x : x + width] = video[:frames]
    return grid
