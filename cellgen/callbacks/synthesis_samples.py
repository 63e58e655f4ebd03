"""Sample annotated sequences during BVDM training: GIFs with mask outlines in the run folder and on W&B."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from cellgen.callbacks.previews import write_gif
from cellgen.callbacks.run_files import log_gifs, run_directory


class SynthesisSampleLogger(Callback):
    """Every ``every_n_train_steps`` steps and at the end of training, synthesise small sequences and log them.

    The model must have ``synthesize(index, frames=..., height=..., width=..., cells=...)`` returning frames and
    masks (as :class:`~cellgen.models.bvdm.BVDM`). Sequence ``i`` always has the same seed, so previews of
    successive steps differ only by what the model learnt. Only global rank 0 samples.

    Args:
        every_n_train_steps: sampling period in optimiser steps (0: only at the end of training).
        num_samples: sequences per log.
        frames: frames per sequence.
        size: frame height and width in pixels.
        cells: cells in the first frame; None: as many as cover a quarter of the field at the training cells'
            median area (a fixed count does not fit every data set: 4 GOWT1 nuclei overfill 128 x 128).
        fps: GIF frame rate.

    A sample that cannot be made is reported as a warning: a preview must never cost a training run (an
    exception in ``on_train_end`` would also skip the final checkpoint).
    """

    def __init__(
        self,
        every_n_train_steps: int = 2000,
        num_samples: int = 1,
        frames: int = 8,
        size: int = 128,
        cells: int | None = None,
        fps: float = 5.0,
    ) -> None:
        super().__init__()
        self.every_n_train_steps = every_n_train_steps
        self.num_samples = num_samples
        self.frames = frames
        self.size = size
        self.cells = cells
        self.fps = fps
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        step = trainer.global_step
        if self.every_n_train_steps and step and step % self.every_n_train_steps == 0:
            self.log_samples(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.log_samples(trainer, pl_module)

    def _cells_that_fit(self, pl_module: L.LightningModule) -> int:
        state = getattr(pl_module, "shape_state", None) or {}
        area = float((state.get("stats") or {}).get("area_median_px") or 400.0)
        return max(1, int(0.25 * self.size * self.size / max(area, 1.0)))

    def log_samples(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Synthesise, write ``<run folder>/samples/stepNNNNNN_sampleI.gif`` and send them to W&B."""
        if not trainer.is_global_zero or trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()
        gifs = []
        try:
            with torch.no_grad():
                cells = self.cells or self._cells_that_fit(pl_module)
                for i in range(self.num_samples):
                    sequence = pl_module.synthesize(
                        i, frames=self.frames, height=self.size, width=self.size, cells=cells
                    )
                    name = f"step{trainer.global_step:06d}_sample{i}.gif"
                    folder = run_directory(trainer) / "samples"
                    gifs.append(write_gif(folder / name, sequence.images, sequence.masks, fps=self.fps))
        except Exception as exc:  # noqa: BLE001 (a preview must not end a training run)
            rank_zero_warn(f"synthesis samples at step {trainer.global_step} skipped: {exc}")
            return
        finally:
            pl_module.train(was_training)
        log_gifs(trainer, "synthetic_sequences", gifs)
