"""The LightningModule side of every diffusion model: one :class:`~cellgen.diffusion.model.DenoisingDiffusion`.

The plain module holds the denoiser, its EMA copy, the schedule and the per-sample seeding; this base only wires
it into training (loss, EMA step after each batch) and keeps the checkpoint keys of the models written before it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from cellgen.diffusion import DiffusionSchedule
from cellgen.diffusion.model import DenoisingDiffusion
from cellgen.models.base import CellgenModule, keep_keys_flat


class DiffusionModule(CellgenModule):
    """Base of :class:`~cellgen.models.mask_ddpm.MaskDDPM` and :class:`~cellgen.models.video_diffusion.VideoDiffusion`.

    Subclasses call :meth:`set_diffusion` in ``__init__`` and have a ``seed`` hyperparameter.
    """

    diffusion: DenoisingDiffusion

    def set_diffusion(self, diffusion: DenoisingDiffusion) -> None:
        self.diffusion = diffusion
        keep_keys_flat(self, "diffusion")  # checkpoints keep their keys: net.*, ema_net.*, ema_updates

    @property
    def net(self) -> nn.Module:
        """The trained denoiser."""
        return self.diffusion.net

    @property
    def ema_net(self) -> nn.Module | None:
        """Its EMA copy, the sampling weights (None without EMA)."""
        return self.diffusion.ema_net

    @property
    def ema_updates(self) -> torch.Tensor:
        return self.diffusion.ema_updates

    @property
    def schedule(self) -> DiffusionSchedule:
        """The noise schedule on this module's device."""
        return self.diffusion.schedule

    def denoiser(self, use_ema: bool = True) -> nn.Module:
        """The network used for sampling: the EMA copy when there is one and ``use_ema``."""
        return self.diffusion.denoiser(use_ema)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise (B, ...) for noisy data x_t (B, ...) in the model range at integer steps t (B,)."""
        return self.diffusion(x_t, t)

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.diffusion.update_ema()

    def sample_generators(self, indices: torch.Tensor | Iterable[int]) -> list[torch.Generator]:
        """One generator per global sample index, so a sample never depends on batch size or device count."""
        return self.diffusion.sample_generators(indices, self.hparams.seed)
