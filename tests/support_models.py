"""A deliberately small model used only to exercise the CLI, checkpointing and DDP plumbing in tests."""

from __future__ import annotations

import torch
from torch import nn

from cellgen.models.base import CellgenModule


class TinyVideoAutoencoder(CellgenModule):
    """Reconstructs patch videos (B, 1, T, H, W) through a 4x spatial bottleneck."""

    def __init__(self, width: int = 4, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv3d(1, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.SiLU(),
            nn.ConvTranspose3d(width, 1, (1, 2, 2), stride=(1, 2, 2)),
        )

    def compute_loss(self, batch: torch.Tensor, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon = self.net(batch)
        return nn.functional.mse_loss(recon, batch), {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
