"""Patch videos with Horn-Schunck optical flow channels for the flow video diffusion model.

Paper: "Neural Cell Video Synthesis via Optical-Flow Diffusion", Eq. 3-4 and Sec. 4.3: the flow (U, V) of consecutive
frames is computed with Horn-Schunck on the patch videos and stacked with the intensity as extra channels; every
channel of every video is min-max normalised to [0, 1].

Flow between T frames has T-1 frames; the last flow frame is repeated so that all channels have T frames (the
writer drops it again when saving generated flow). The per-video (min, max) of U and V are kept so that flow can
be mapped back to pixels per frame for display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellgen.data.atomic import atomic_file
from cellgen.data.patch_video import PatchVideoDataModule, load_patch_videos
from cellgen.flow import horn_schunck


def patch_video_flow(videos: np.ndarray, iterations: int = 10, lam: float = 1.0, chunk: int = 16) -> np.ndarray:
    """Horn-Schunck flow of patch videos, last flow frame repeated to keep T frames.

    Args:
        videos: (N, 1, T, H, W) float32 intensities in [0, 1] (``lam`` is relative to this scale).
        iterations: Jacobi iterations of Horn-Schunck.
        lam: smoothness weight alpha^2.
        chunk: videos per batch (bounds memory).

    Returns:
        (N, 2, T, H, W) float32 flow in pixels per frame, channels (U, V).
    """
    flows = []
    with torch.no_grad():
        for start in range(0, len(videos), chunk):
            batch = torch.from_numpy(np.ascontiguousarray(videos[start : start + chunk, 0]))
            flow = horn_schunck(batch, iterations=iterations, lam=lam)  # (n, 2, T-1, H, W)
            flows.append(torch.cat([flow, flow[:, :, -1:]], dim=2).numpy())
    return np.concatenate(flows).astype(np.float32)


def normalise_flow(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max each flow channel of each video to [0, 1] (paper Sec. 4.3), keeping the ranges.

    Args:
        flow: (N, 2, T, H, W) flow in pixels per frame.

    Returns:
        normalised (N, 2, T, H, W) float32 and ranges (N, 2, 2) float32 as ``[channel, (min, max)]``.
    """
    lo = flow.min(axis=(2, 3, 4))
    hi = flow.max(axis=(2, 3, 4))
    scale = np.maximum(hi - lo, 1e-8)[:, :, None, None, None]
    normalised = (flow - lo[:, :, None, None, None]) / scale
    return normalised.astype(np.float32), np.stack([lo, hi], axis=-1).astype(np.float32)


def denormalise_flow(flow01: torch.Tensor | np.ndarray, ranges: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Map [0, 1] flow back to pixels per frame.

    Args:
        flow01: (B, 2, T, H, W) normalised flow.
        ranges: (B, 2, 2) or (2, 2) per-channel ``(min, max)``.

    Returns:
        (B, 2, T, H, W) float32 flow in pixels per frame.
    """
    flow01 = torch.as_tensor(flow01, dtype=torch.float32)
    ranges = torch.as_tensor(ranges, dtype=torch.float32, device=flow01.device)
    if ranges.ndim == 2:
        ranges = ranges.expand(flow01.shape[0], 2, 2)
    lo, hi = ranges[..., 0, None, None, None], ranges[..., 1, None, None, None]
    return flow01 * (hi - lo) + lo


def _load_flow(videos: np.ndarray, cache: Path | None, iterations: int, lam: float) -> np.ndarray:
    """Raw flow (N, 2, T, H, W) from the ``.npz`` cache beside the patch cache, computed (atomically) otherwise."""
    if cache is not None and cache.is_file():
        try:
            with np.load(cache) as cached:
                if cached["flow"].shape[0] == len(videos):
                    return cached["flow"]
        except Exception:
            pass
        cache.unlink(missing_ok=True)  # a damaged or stale cache is rebuilt, not trusted
    flow = patch_video_flow(videos, iterations, lam)
    if cache is not None:
        with atomic_file(cache) as tmp:
            np.savez(tmp, flow=flow)
    return flow


class FlowPatchVideoDataModule(PatchVideoDataModule):
    """Patch videos with channels (I, U, V), each in [0, 1] per video (paper Sec. 3.2, 4.2-4.3).

    Flips negate U (horizontal) and V (vertical) as ``1 - x`` (see ``PatchVideoDataset``).

    Args:
        hs_iterations: Horn-Schunck Jacobi iterations.
        hs_lambda: Horn-Schunck smoothness weight alpha^2, relative to [0, 1] intensities.
        **kwargs: everything :class:`~cellgen.data.patch_video.PatchVideoDataModule` takes.

    Attributes:
        flow_range: (N, 2, 2) per-video ``(min, max)`` of U and V in pixels per frame, in load order.
    """

    flow_channels = (1, 2)

    def __init__(self, hs_iterations: int = 10, hs_lambda: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.flow_range: np.ndarray | None = None

    def load_videos(self) -> np.ndarray:
        """All patch videos (N, 3, T, P, P): intensity (scaled as ``intensity`` says), U and V (min-max per video)."""
        cache_dir = self.hparams.cache_dir or None
        iterations, lam = self.hparams.hs_iterations, self.hparams.hs_lambda
        parts, ranges = [], []
        for seq in self.resolve_sequences():
            videos, patch_cache = load_patch_videos(seq, self.spec, cache_dir)
            flow_cache = None
            if patch_cache is not None:
                flow_cache = patch_cache.with_name(f"{patch_cache.stem}-hs{iterations}-{lam:g}.npz")
            flow01, flow_range = normalise_flow(_load_flow(videos, flow_cache, iterations, lam))
            parts.append(np.concatenate([videos, flow01], axis=1))
            ranges.append(flow_range)
        self.flow_range = np.concatenate(ranges)
        return np.concatenate(parts)

    def typical_flow_range(self) -> np.ndarray:
        """(2, 2) median per-video ``(min, max)`` of U and V: how generated [0, 1] flow is mapped to pixels."""
        if self.flow_range is None:
            self.load_videos()
        return np.median(self.flow_range, axis=0).astype(np.float32)
