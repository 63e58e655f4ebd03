"""Writes synthetic annotated sequences in CTC layout with a GIF preview (mask outlines drawn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from cellgen.callbacks.previews import write_gif
from cellgen.data.ctc import PixelSize, write_sequence
from cellgen.data.errors import CellgenInputError
from cellgen.data.ownership import MARKER, check_replaceable, marker_text, remove_stale_staging


def write_synthetic_sequence(
    out_dir: str | Path,
    index: int,
    sequence: Any,
    overwrite: bool = False,
    force: bool = False,
    command: str = "predict",
    settings: Mapping[str, Any] | None = None,
    pixel_size: PixelSize | None = None,
) -> Path:
    """Write one :class:`~cellgen.synth.pipeline.SynthesizedSequence` as ``out_dir/NN`` (NN = index + 1).

    The sequence is validated before it is renamed into place (atomic), so a half-written or invalid
    sequence never appears; the preview sits beside it as ``NN_preview.gif``. ``NN`` carries a marker
    (:mod:`cellgen.data.ownership`) with ``settings``; ``overwrite`` replaces only sequences carrying one,
    ``force`` any (never through a symbolic link). ``pixel_size`` (the training data's, kept in the BVDM
    checkpoint) goes into every frame and mask, so real and synthetic data overlay.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CellgenInputError(out_dir, "output is a file, not a folder", "pass a folder as the output")
    name = f"{index + 1:02d}"
    check_replaceable(out_dir, name, overwrite, force)
    remove_stale_staging(out_dir, name)
    path = write_sequence(
        out_dir,
        name,
        sequence.images,
        sequence.masks,
        sequence.tracks,
        overwrite=overwrite or force,
        marker=(MARKER, marker_text(command, settings)),
        pixel_size=pixel_size,
    )
    write_gif(preview_path(out_dir, index), sequence.images, sequence.masks)
    return path


def preview_path(out_dir: str | Path, index: int) -> Path:
    """``out_dir/NN_preview.gif`` of sequence ``index``."""
    return Path(out_dir) / f"{index + 1:02d}_preview.gif"


class CTCSequenceWriter(BasePredictionWriter):
    """Prediction writer for BVDM: each predicted sequence index is written exactly once, also under DDP.

    Args:
        output_dir: dataset folder that receives ``01``, ``01_GT``, ``02`` ...
        overwrite: replace sequences that cellgen wrote before (they carry a marker file).
        force: replace existing sequences even without the marker.
    """

    def __init__(self, output_dir: str = "runs/bvdm/synthetic", overwrite: bool = False, force: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.force = force

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
            path = write_synthetic_sequence(
                self.output_dir, index, sequence, self.overwrite, self.force, pixel_size=pixel_size
            )
            print(f"synthetic sequence written: {path} ({len(sequence.tracks)} tracks)")
