"""Data for BVDM training: cell crops for the texture DDPM and mask pairs for the flow model, in one batch."""

from __future__ import annotations

from functools import cached_property

import torch
from torch.utils.data import DataLoader, Dataset

from cellgen.data.base import SampleIndexDataset, TrainValDataModule
from cellgen.data.cell_crops import CellCropDataModule


class CellsAndPairs(Dataset):
    """Item ``i``: crop ``i mod N_cells`` and mask pair ``i mod N_pairs``, so both networks see every sample.

    The epoch length is that of the larger set; the smaller one cycles (shuffling decorrelates the pairing).
    """

    def __init__(self, cells: Dataset, pairs: Dataset) -> None:
        self.cells, self.pairs = cells, pairs

    def __len__(self) -> int:
        return max(len(self.cells), len(self.pairs))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"cells": self.cells[index % len(self.cells)], "pairs": self.pairs[index % len(self.pairs)]}


class BVDMDataModule(TrainValDataModule):
    """Batches ``{"cells": (B, 1, S, S), "pairs": (B, 2, S, S)}`` from CTC sequences (demo data if none given).

    Args:
        sequences: raw-frame folders of the training sequence(s), e.g. ``data/Fluo-N2DH-GOWT1/01``.
        demo_flavour: demo flavour used when ``sequences`` is empty.
        crop_size: single-cell crop size (BVDM Sec. 3: 96x96).
        min_area: smallest usable cell mask in pixels.
        batch_size: crops (and pairs) per batch (BVDM Sec. 3: 32).
        num_workers: DataLoader workers.
        val_fraction: fraction of tracks held out for validation.
        augment: random flips and 90-degree rotations.
        cache_dir: extraction cache folder (auto: under ``$CELLGEN_CACHE``; None disables caching).
        split_seed: seed of the track split.
        num_predict: sequences ``cellgen predict`` synthesises (each with its own seed).
    """

    def __init__(
        self,
        sequences: list[str] | None = None,
        demo_flavour: str = "fluo",
        crop_size: int = 96,
        min_area: int = 20,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        augment: bool = True,
        cache_dir: str | None = "auto",
        split_seed: int = 0,
        num_predict: int = 1,
    ) -> None:
        super().__init__(sequences, demo_flavour)
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @cached_property
    def cells(self) -> CellCropDataModule:
        """The crop view, built lazily (outside the CLI's instantiation context, which would rename its hparams)."""
        return CellCropDataModule(mode="cells", **self._shared())

    @cached_property
    def pairs(self) -> CellCropDataModule:
        return CellCropDataModule(mode="pairs", **self._shared())

    def _shared(self) -> dict:
        keys = ("sequences", "demo_flavour", "crop_size", "min_area", "batch_size", "num_workers", "val_fraction")
        keys += ("augment", "cache_dir", "split_seed")
        return {key: self.hparams[key] for key in keys}

    def prepare_data(self) -> None:
        self.cells.prepare_data()  # one extraction fills the cache for both views

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" or self.train_set is not None:
            return
        self.cells.setup(stage)
        self.pairs.setup(stage)
        self.train_set = CellsAndPairs(self.cells.train_set, self.pairs.train_set)
        self.val_set = CellsAndPairs(self.cells.val_set, self.pairs.val_set)

    @property
    def foreground_mean(self) -> float | None:
        return self.cells.foreground_mean

    def predict_dataloader(self) -> DataLoader:
        """Sequence indices 0..num_predict-1; under DDP each rank gets a disjoint share, each index once."""
        return DataLoader(SampleIndexDataset(self.hparams.num_predict), batch_size=1)
