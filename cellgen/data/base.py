"""Base LightningDataModule of every cellgen data family: the CLI's subclass-mode root."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from cellgen.data.ctc import CTCSequence, checked_sequence
from cellgen.data.synthetic import demo_sequence


class CellgenDataModule(L.LightningDataModule):
    """Resolves sequence folders, falling back to the embedded demo data when none are given."""

    def __init__(self, sequences: list[str] | None = None, demo_flavour: str = "fluo") -> None:
        super().__init__()
        self.sequence_paths = list(sequences) if sequences else []
        self.demo_flavour = demo_flavour

    def prepare_data(self) -> None:
        if not self.sequence_paths:
            demo_sequence(self.demo_flavour)  # generate once, on rank 0, before any worker reads it

    def resolve_sequences(self) -> list[CTCSequence]:
        """Open the configured sequences (or the demo sequence) after the shared CTC validation.

        Raises:
            CellgenInputError: the first problem of the first bad sequence, as one line.
        """
        paths = self.sequence_paths or [str(demo_sequence(self.demo_flavour))]
        return [checked_sequence(Path(p)) for p in paths]


class TrainValDataModule(CellgenDataModule):
    """A data module with a ``train_set`` and a ``val_set`` and ``batch_size``/``num_workers`` hyperparameters.

    Training batches are shuffled; the last short batch is dropped only when a full one exists, so a set smaller
    than one batch (the tiny demo configs) still trains.
    """

    train_set: Dataset | None
    val_set: Dataset | None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            num_workers=self.hparams.num_workers,
            drop_last=len(self.train_set) >= self.hparams.batch_size,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)


class SampleIndexDataset(Dataset):
    """Indices 0..n-1: each predicted sample gets its own seed, independent of batch size and device count."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"num_predict must be at least 1, got {count}")
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(index, dtype=torch.long)
