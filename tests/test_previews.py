"""Preview writers: GIF round trip and mask outlines."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from cellgen.callbacks.previews import outline_overlay, side_by_side, to_uint8, write_gif


def test_gif_round_trip_with_outlines(tmp_path: Path) -> None:
    frames = np.zeros((3, 16, 16), np.float32)
    for t in range(3):  # distinct frames (GIF encoders merge identical consecutive frames)
        frames[t, 4 + t : 12, 4:12] = 1.0
    masks = (frames > 0).astype(np.uint16)
    path = write_gif(tmp_path / "p.gif", frames, masks)
    read = np.asarray(imageio.mimread(path))
    assert read.shape[:3] == (3, 16, 16)
    assert not list(tmp_path.glob("*.tmp*")) and [p.name for p in tmp_path.iterdir()] == ["p.gif"]


def test_outline_is_drawn_only_on_the_boundary() -> None:
    masks = np.zeros((1, 9, 9), np.uint16)
    masks[0, 2:7, 2:7] = 5
    rgb = outline_overlay(np.zeros((1, 9, 9), np.uint8), masks)
    red = rgb[0, ..., 0] == 255
    assert red[2, 2] and red[2, 6] and not red[4, 4] and not red[0, 0]
    assert red.sum() == 16  # the 5x5 square's inner boundary


def test_scaling_and_side_by_side() -> None:
    video = np.linspace(0, 10, 2 * 4 * 4).reshape(2, 4, 4)
    scaled = to_uint8(video, 0, 100)
    assert scaled.min() == 0 and scaled.max() == 255
    both = side_by_side(scaled, scaled[:, :3], gap=2)
    assert both.shape == (2, 4, 10)


def test_comparison_still_puts_real_left_and_synthetic_right(demo_dataset: Path, tmp_path: Path) -> None:
    from cellgen.callbacks.previews import comparison_still, write_png
    from cellgen.data.ctc import CTCSequence

    real, synthetic = demo_dataset / "Demo-Fluo" / "01", demo_dataset / "Demo-Fluo" / "02"
    still = comparison_still(real, synthetic, frames=(0, -1), size=64)
    assert still.shape == (2 * 64 + 6, 2 * 64 + 6, 3) and still.dtype == np.uint8
    # outlines are drawn in red where the real frame-0 mask has its boundary
    mask = CTCSequence(real).tra_mask(0)[96:160, 96:160]
    assert (still[:64, :64][find_boundaries(mask, mode="inner")] == (255, 64, 64)).all()
    assert (still[:, 64:70] == 255).all()  # the white gap between the two columns
    path = write_png(tmp_path / "still.png", still)
    assert np.array_equal(imageio.imread(path), still)


@pytest.mark.parametrize(("fps", "delay_ms"), [(5.0, 200), (10.0, 100), (2.0, 500), (60.0, 20)])
def test_gif_plays_at_the_intended_frame_rate(tmp_path: Path, fps: float, delay_ms: int) -> None:
    from PIL import Image, ImageSequence

    frames = np.stack([np.full((8, 8), 40 * t, np.uint8) for t in range(3)])
    with Image.open(write_gif(tmp_path / "p.gif", frames, fps=fps)) as gif:
        delays = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert delays == [delay_ms] * 3
