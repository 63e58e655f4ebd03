"""Writers for generated videos: TIFF stacks and GIF previews at predict time, sample videos during training.

A prediction is ``{"index": (B,), "video": (B, 1, T, H, W) in [0, 1]}`` and, for the flow model, also
``"flow": (B, 2, T-1, H, W)`` in pixels per frame (see ``VideoDiffusion.predict_step``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import tifffile
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

from cellgen.callbacks.previews import side_by_side, to_uint8, write_gif
from cellgen.callbacks.run_files import log_gifs, run_directory
from cellgen.data.atomic import atomic_file
from cellgen.data.flow_patch_video import denormalise_flow
from cellgen.flow import flow_to_color


def write_tiff_stack(path: str | Path, stack: np.ndarray) -> Path:
    """Write a (T, H, W) stack as one zlib-compressed TIFF, atomically (temporary file, then rename)."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(stack), compression="zlib")
    return path


def preview_frames(video: np.ndarray, flow: np.ndarray | None = None) -> np.ndarray:
    """Frames of a preview: the video (T, H, W) as grey, with flow (2, T-1, H, W) as colour-wheel frames beside it.

    Returns:
        (T, H, W) uint8 without flow, else (T-1, H, 2W + gap, 3) RGB (one colour scale for the whole video).
    """
    grey = to_uint8(video)
    if flow is None:
        return grey
    colour = flow_to_color(np.moveaxis(flow, 1, 0))  # (T-1, H, W, 3)
    return side_by_side(np.repeat(grey[..., None], 3, axis=-1), colour)


def write_video_sample(
    output_dir: str | Path, index: int, video: np.ndarray, flow: np.ndarray | None = None, fps: float = 5.0
) -> list[Path]:
    """Write sample ``index``: ``sample_XXXX.tif`` (T, H, W) float32 in [0, 1], ``sample_XXXX.gif`` and, with flow,
    ``sample_XXXX_u.tif`` / ``sample_XXXX_v.tif`` (T-1, H, W) float32 in pixels per frame.

    Args:
        output_dir: folder that receives the files.
        index: global sample index (names the files, so every sample is written once however it was batched).
        video: (T, H, W) in [0, 1].
        flow: (2, T-1, H, W) flow (U, V), or None.
        fps: GIF frame rate.
    """
    output_dir = Path(output_dir)
    stem = f"sample_{index:04d}"
    paths = [write_tiff_stack(output_dir / f"{stem}.tif", video.astype(np.float32))]
    if flow is not None:
        paths.append(write_tiff_stack(output_dir / f"{stem}_u.tif", flow[0].astype(np.float32)))
        paths.append(write_tiff_stack(output_dir / f"{stem}_v.tif", flow[1].astype(np.float32)))
    paths.append(write_gif(output_dir / f"{stem}.gif", preview_frames(video, flow), fps=fps))
    return paths


class VideoPredictionWriter(BasePredictionWriter):
    """Writes every predicted video (and its flow) as TIFF stacks plus a GIF preview, named by global index.

    The predict dataset yields global sample indices and Lightning's predict sampler gives each index to one
    rank only, so under DDP every sample is written exactly once.

    Args:
        output_dir: folder for ``sample_XXXX.tif`` / ``.gif`` (and ``_u.tif`` / ``_v.tif``); default
            ``<trainer.default_root_dir>/samples``.
        fps: GIF frame rate.
    """

    def __init__(self, output_dir: str | None = None, fps: float = 5.0) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir else None
        self.fps = fps

    def resolve_output_dir(self, trainer: L.Trainer) -> Path:
        return self.output_dir or Path(trainer.default_root_dir) / "samples"

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        videos = prediction["video"].float().cpu().numpy()
        flows = prediction["flow"].float().cpu().numpy() if "flow" in prediction else None
        for row, index in enumerate(prediction["index"].tolist()):
            flow = flows[row] if flows is not None else None
            write_video_sample(self.resolve_output_dir(trainer), int(index), videos[row, 0], flow, self.fps)


class VideoSampleLogger(Callback):
    """Every ``every_n_epochs`` epochs, generate a few videos with a cheap DDIM run and log them.

    The previews are saved as GIFs under ``<run folder>/samples/`` (see :func:`run_directory`) and, with a
    ``WandbLogger``, also logged to W&B (wandb is imported only then). Only global rank 0 samples; the seeds are
    fixed, so epochs are comparable.

    Args:
        every_n_epochs: sampling period in epochs.
        num_samples: videos per log.
        sampling_steps: DDIM steps (few: a preview, not a result).
        fps: frame rate of the logged videos.
    """

    def __init__(self, every_n_epochs: int = 10, num_samples: int = 2, sampling_steps: int = 10, fps: float = 5.0):
        super().__init__()
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.sampling_steps = sampling_steps
        self.fps = fps

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            videos = pl_module.generate(
                pl_module.sample_generators(range(self.num_samples)), sampler="ddim", num_steps=self.sampling_steps
            )
        finally:
            pl_module.train(was_training)
        videos = videos.float().cpu().numpy()  # (N, C, T, H, W) in [0, 1]
        flow_range = getattr(pl_module, "flow_range", None)
        frames = []
        for video in videos:
            flow = None
            if video.shape[0] == 3 and flow_range is not None:
                flow = denormalise_flow(video[None, 1:, :-1], flow_range.cpu())[0].numpy()
            frames.append(preview_frames(video[0], flow))
        self._log(trainer, frames)

    def _log(self, trainer: L.Trainer, frames: list[np.ndarray]) -> None:
        folder = run_directory(trainer) / "samples"
        gifs = [
            write_gif(folder / f"epoch{trainer.current_epoch:04d}_sample{i}.gif", clip, fps=self.fps)
            for i, clip in enumerate(frames)
        ]
        log_gifs(trainer, "samples", gifs)
