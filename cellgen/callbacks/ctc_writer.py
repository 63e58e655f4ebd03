"""Writes synthetic annotated sequences in CTC layout with a GIF preview (mask outlines drawn)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from cellgen.callbacks.previews import write_gif
from cellgen.data.ctc import PixelSize, write_sequence


def write_synthetic_sequence(
    out_dir: str | Path, index: int, sequence: Any, overwrite: bool = False, pixel_size: PixelSize | None = None
) -> Path:
    """Write one :class:`~cellgen.synth.pipeline.SynthesizedSequence` as ``out_dir/NN`` (NN = index + 1).

    The sequence is validated before it is renamed into place (atomic), so a half-written or invalid
    sequence never appears; the preview sits beside it as ``NN_preview.gif``. ``pixel_size`` (the training
    data's, kept in the BVDM checkpoint) goes into every frame and mask, so real and synthetic data overlay.
    """
    out_dir = Path(out_dir)
    name = f"{index + 1:02d}"
    path = write_sequence(
        out_dir, name, sequence.images, sequence.masks, sequence.tracks, overwrite=overwrite, pixel_size=pixel_size
    )
    write_gif(out_dir / f"{name}_preview.gif", sequence.images, sequence.masks)
    return path


class CTCSequenceWriter(BasePredictionWriter):
    """Prediction writer for BVDM: each predicted sequence index is written exactly once, also under DDP.

    Args:
        output_dir: dataset folder that receives ``01``, ``01_GT``, ``02`` ...
        overwrite: replace sequences that already exist.
    """

    def __init__(self, output_dir: str = "runs/bvdm/synthetic", overwrite: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Sequence[Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        # The batch holds global sequence indices; the distributed sampler gives each to one rank only.
        for index, sequence in zip(batch.tolist(), prediction, strict=True):
            pixel_size = getattr(pl_module, "pixel_size", None)
            path = write_synthetic_sequence(self.output_dir, index, sequence, self.overwrite, pixel_size)
            print(f"synthetic sequence written: {path} ({len(sequence.tracks)} tracks)")
