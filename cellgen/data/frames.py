"""Frames as networks see them: percentile normalisation and resizing of images and label images.

Shared by the segmentation data, the downstream protocol and the cell-extent estimate, so none of them imports
another's DataModule file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.transform import resize

from cellgen.data.ctc import CTCSequence


def sequence_percentiles(
    seq: CTCSequence, percentiles: tuple[float, float] = (1.0, 99.8), max_frames: int = 8
) -> tuple[float, float]:
    """Low/high intensity percentiles of a sequence, from up to ``max_frames`` evenly spaced frames."""
    indices = seq.frame_indices
    picks = np.unique(np.linspace(0, len(indices) - 1, min(max_frames, len(indices))).round().astype(int))
    values = np.concatenate([seq.image(indices[i]).ravel()[::4] for i in picks]).astype(np.float32)
    low, high = np.percentile(values, percentiles)
    return float(low), float(max(high, low + 1e-6))


def scaled_shape(shape: Sequence[int], downscale: float) -> tuple[int, int]:
    """(h, w) of a frame of ``shape`` (H, W) after scaling by ``downscale`` (0 < downscale <= 1)."""
    if not 0.0 < downscale <= 1.0:
        raise ValueError(f"downscale must be in (0, 1], got {downscale}")
    return max(1, round(shape[0] * downscale)), max(1, round(shape[1] * downscale))


def resize_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Bilinear resize (anti-aliased when shrinking) of an (H, W) image to float32 ``shape``."""
    image = image.astype(np.float32, copy=False)
    if tuple(image.shape) == tuple(shape):
        return image
    shrink = shape[0] < image.shape[0]
    return resize(image, shape, order=1, anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def resize_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) label image: ids are kept, never blended."""
    if tuple(labels.shape) == tuple(shape):
        return labels
    return resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def normalised_frame(seq: CTCSequence, t: int, low: float, high: float, downscale: float = 1.0) -> np.ndarray:
    """Frame ``t`` as float32 (h, w): percentile-normalised (low -> 0, high -> 1, not clipped) and downscaled."""
    image = (seq.image(t).astype(np.float32) - low) / (high - low)
    return resize_image(image, scaled_shape(image.shape, downscale))
