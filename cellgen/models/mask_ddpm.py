"""BVDM texture model: an unconditional DDPM on single-cell crops that paints texture onto masks (SDEdit).

Paper: Yilmaz, Eschweiler, Stegmaier, "Annotated Biomedical Video Generation using Denoising Diffusion
Probabilistic Models and Flow Fields" (BVDM, SASHIMI 2024). Sec. 2: a DDPM (Ho et al. 2020) learns isolated
cells on a zero background; at synthesis a mask painted with a constant foreground value (0.588) is noised to
step t0 and denoised, so the texture follows the given shape (t0 = 200 for a cell's first frame, t0 = 10 for
later frames, which start from the previous frame's texture warped by the flow model). Sec. 3: 96x96 crops,
batch 32, Adam with learning rate 5e-4, T = 1000 steps.

Value ranges: crops and masks arrive in [0, 1] (:mod:`cellgen.data.cell_crops`); the network works on
``model_range`` (default [-1, 1], the usual DDPM data range, Ho et al. 2020 Sec. 3.3). Public methods take and
return [0, 1], so the 0.588 mask value of the paper is used as is.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.diffusion import DiffusionSchedule
from cellgen.diffusion import sample as diffusion_sample
from cellgen.models.base import CellgenModule
from cellgen.nn.ema import update_ema, warmed_up_decay
from cellgen.nn.unet import UNet2D


class MaskDDPM(CellgenModule):
    """Epsilon-prediction DDPM on (B, 1, S, S) cell crops with an optional EMA copy of the denoiser.

    Args:
        crop_size: height and width of sampled crops (BVDM Sec. 3: 96); must be divisible by
            ``2 ** (len(channel_mults) - 1)``.
        base_channels: U-Net width of the first level.
        channel_mults: U-Net width multiplier per level (our U-Net stands in for the authors' pixel-shuffle
            U-Net; the widths are ours).
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention per level (coarsest only by default).
        dropout: dropout in residual blocks.
        schedule: ``cosine`` (the authors' released BVDM code, after Eschweiler et al. 2024) or ``linear``
            (Ho et al. 2020). The paper's t0 = 200 / 10 were chosen with the cosine schedule.
        num_timesteps: diffusion steps T (BVDM Sec. 3: 1000).
        lr: Adam learning rate (BVDM Sec. 3: 5e-4).
        ema_decay: decay of the exponential moving average of the weights used for sampling; None disables
            it. The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs still sample well.
        model_range: the data range the network sees; [0, 1] inputs are mapped linearly onto it. The authors'
            code trains on [0, 1] directly, which makes a given t0 a relatively stronger edit.
        sampler: ``ddpm`` (ancestral, as in the paper) or ``ddim`` for ``predict``.
        sample_steps: number of sampling steps for ``predict`` (None: all T for ddpm).
        seed: base seed of predicted samples; sample ``i`` uses seed ``seed * 1_000_003 + i``.
    """

    def __init__(
        self,
        crop_size: int = 96,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[bool] = (False, False, True),
        dropout: float = 0.0,
        schedule: Literal["cosine", "linear"] = "cosine",
        num_timesteps: int = 1000,
        lr: float = 5e-4,
        ema_decay: float | None = 0.999,
        model_range: tuple[float, float] = (-1.0, 1.0),
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        sample_steps: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        factor = 2 ** (len(channel_mults) - 1)
        if crop_size % factor:
            raise ValueError(f"crop_size {crop_size} must be divisible by {factor} for {len(channel_mults)} levels")
        self.net = UNet2D(
            in_channels=1,
            out_channels=1,
            base_channels=base_channels,
            channel_mults=tuple(channel_mults),
            num_res_blocks=num_res_blocks,
            attention_levels=tuple(attention_levels),
            time_conditioned=True,
            dropout=dropout,
        )
        # The EMA copy is a frozen submodule: saved in checkpoints, never seen by the optimizer.
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False) if ema_decay else None
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long), persistent=bool(ema_decay))
        self._schedule = DiffusionSchedule.create(schedule, num_timesteps)  # rebuilt from hparams, not saved

    # ----------------------------------------------------------------------------------------- helpers

    @property
    def schedule(self) -> DiffusionSchedule:
        """The noise schedule on this module's device."""
        self._schedule = self._schedule.to(self.device)
        return self._schedule

    def to_model_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.hparams.model_range
        return x * (high - low) + low

    def from_model_range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.hparams.model_range
        return ((x - low) / (high - low)).clamp(0.0, 1.0)

    def denoiser(self, use_ema: bool = True) -> nn.Module:
        """The network used for sampling: the EMA copy when there is one and ``use_ema``."""
        return self.ema_net if use_ema and self.ema_net is not None else self.net

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise (B, 1, S, S) for noisy crops x_t (B, 1, S, S) at integer steps t (B,)."""
        return self.net(x_t, t)

    # ----------------------------------------------------------------------------------------- training

    def compute_loss(self, batch: torch.Tensor, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Simple DDPM loss (Ho et al. 2020, Eq. 14): MSE between true and predicted noise at a random step."""
        x0 = self.to_model_range(batch)
        t = torch.randint(0, self.hparams.num_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        eps = self.net(self.schedule.q_sample(x0, t, noise), t)
        return F.mse_loss(eps.float(), noise), {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        if self.ema_net is None:
            return
        self.ema_updates += 1
        update_ema(self.ema_net, self.net, warmed_up_decay(self.hparams.ema_decay, int(self.ema_updates.item())))

    # ----------------------------------------------------------------------------------------- sampling

    def _denoise_fn(self, use_ema: bool):
        net = self.denoiser(use_ema)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return net(x_t, t).to(x_t.dtype)  # fp32 sampling arithmetic even under bf16 autocast

        return denoise

    @torch.no_grad()
    def generate(
        self,
        num_samples: int | None = None,
        generators: Sequence[torch.Generator] | None = None,
        sampler: Literal["ddpm", "ddim"] | None = None,
        num_steps: int | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """Sample new cell crops from pure noise.

        Args:
            num_samples: number of crops (taken from ``len(generators)`` when generators are given).
            generators: one torch.Generator per sample (on this module's device) for reproducible samples.
            sampler: ``ddpm`` or ``ddim`` (default: the ``sampler`` hyperparameter).
            num_steps: sampling steps (default: ``sample_steps``, or all T).
            eta: DDIM stochasticity.
            use_ema: sample with the EMA weights when present.

        Returns:
            (B, 1, S, S) crops in [0, 1].
        """
        if generators is not None:
            num_samples = len(generators)
        if not num_samples:
            raise ValueError("pass num_samples or generators")
        size = self.hparams.crop_size
        x = diffusion_sample(
            self._denoise_fn(use_ema),
            self.schedule,
            shape=(num_samples, 1, size, size),
            sampler=sampler or self.hparams.sampler,
            num_steps=num_steps if num_steps is not None else self.hparams.sample_steps,
            eta=eta,
            generator=list(generators) if generators is not None else None,
            clip_x0=tuple(self.hparams.model_range),
            device=self.device,
        )
        return self.from_model_range(x)

    @torch.no_grad()
    def denoise_from(
        self,
        x_start: torch.Tensor,
        start_step: int,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        num_steps: int | None = None,
        generators: Sequence[torch.Generator] | None = None,
        eta: float = 0.0,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """SDEdit (Meng et al. 2022) as in BVDM synthesis: noise ``x_start`` to ``start_step``, then denoise.

        All cells of a frame go through in one batch (one network call per step). Works on any device and
        under ``torch.autocast`` (the sampling arithmetic stays in the input's dtype).

        Args:
            x_start: (B, 1, S, S) images in [0, 1], e.g. masks painted with 0.588 (paper, first frame of a
                cell, ``start_step=200``) or the previous textured frame warped onto the new mask
                (``start_step=10``). S must be divisible by ``2 ** (len(channel_mults) - 1)``.
            start_step: t0 in [0, T], the number of denoising steps (the authors' convention: the input is
                noised to step index t0 - 1 and denoised through t0 - 1, ..., 0); 0 returns ``x_start``.
            sampler: ``ddpm`` (ancestral, as in the paper) or ``ddim``.
            num_steps: steps between t0 and 0 (None: every step for ddpm).
            generators: one torch.Generator per sample on ``x_start``'s device (noise and sampling).
            eta: DDIM stochasticity.
            use_ema: use the EMA weights when present.

        Returns:
            (B, 1, S, S) images in [0, 1].
        """
        if not 0 <= start_step <= self.hparams.num_timesteps:
            raise ValueError(f"start_step must lie in [0, {self.hparams.num_timesteps}], got {start_step}")
        if start_step == 0:
            return x_start.clone()
        x = diffusion_sample(
            self._denoise_fn(use_ema),
            self.schedule.to(x_start.device),
            x_start=self.to_model_range(x_start),
            start_step=start_step - 1,
            sampler=sampler,
            num_steps=num_steps,
            eta=eta,
            generator=list(generators) if generators is not None else None,
            clip_x0=tuple(self.hparams.model_range),
            device=x_start.device,
        )
        return self.from_model_range(x)

    def sample_generators(self, indices: torch.Tensor) -> list[torch.Generator]:
        """One generator per sample index (B,), so a sample never depends on batch size or device count."""
        base = int(self.hparams.seed) * 1_000_003
        return [torch.Generator(self.device).manual_seed(base + int(i)) for i in indices.tolist()]

    def predict_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Sample crops (B, 1, S, S) in [0, 1] for a batch of sample indices (B,)."""
        return self.generate(generators=self.sample_generators(batch))
