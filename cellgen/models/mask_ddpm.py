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

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

import torch

from cellgen.diffusion.model import DenoisingDiffusion
from cellgen.models.base import build_from, with_defaults
from cellgen.models.diffusion_module import DiffusionModule
from cellgen.nn.unet import UNet2D


class TextureDDPM(DenoisingDiffusion):
    """The texture model as a plain module: a 2-D U-Net denoiser of (B, 1, S, S) crops with EMA and schedule.

    Built by :class:`MaskDDPM` and by :class:`~cellgen.models.bvdm.BVDM` from MaskDDPM's arguments (every one
    required here: the defaults live in MaskDDPM's signature). ``denoise_from`` is the SDEdit step of synthesis.
    """

    def __init__(
        self,
        *,
        crop_size: int,
        base_channels: int,
        channel_mults: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[bool],
        dropout: float,
        schedule: Literal["cosine", "linear"],
        num_timesteps: int,
        ema_decay: float | None,
        model_range: tuple[float, float],
    ) -> None:
        factor = 2 ** (len(channel_mults) - 1)
        if crop_size % factor:
            raise ValueError(f"crop_size {crop_size} must be divisible by {factor} for {len(channel_mults)} levels")
        net = UNet2D(
            in_channels=1,
            out_channels=1,
            base_channels=base_channels,
            channel_mults=tuple(channel_mults),
            num_res_blocks=num_res_blocks,
            attention_levels=tuple(attention_levels),
            time_conditioned=True,
            dropout=dropout,
        )
        super().__init__(net, schedule, num_timesteps, ema_decay, tuple(model_range), loss="l2")
        self.crop_size = crop_size


class TextureDDPMArgs(TypedDict, total=False):
    """BVDM's ``ddpm``: any of :class:`MaskDDPM`'s arguments but ``crop_size``; unset ones take its defaults."""

    base_channels: int
    channel_mults: list[int]
    num_res_blocks: int
    attention_levels: list[bool]
    dropout: float
    schedule: Literal["cosine", "linear"]
    num_timesteps: int
    lr: float
    ema_decay: float | None
    model_range: tuple[float, float]
    sampler: Literal["ddpm", "ddim"]
    sample_steps: int | None
    seed: int


def mask_ddpm_settings(ddpm: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ddpm`` completed with :class:`MaskDDPM`'s defaults (they are written only in its signature)."""
    return with_defaults(MaskDDPM, ddpm, "ddpm")


class MaskDDPM(DiffusionModule):
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
        self.set_diffusion(build_from(TextureDDPM, self.hparams, crop_size=crop_size))

    # ----------------------------------------------------------------------------------------- helpers

    def to_model_range(self, x: torch.Tensor) -> torch.Tensor:
        return self.diffusion.to_model_range(x)

    def from_model_range(self, x: torch.Tensor) -> torch.Tensor:
        return self.diffusion.from_model_range(x)

    # ----------------------------------------------------------------------------------------- training

    def compute_loss(self, batch: torch.Tensor, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Simple DDPM loss (Ho et al. 2020, Eq. 14): MSE between true and predicted noise at a random step."""
        return self.diffusion.loss(batch), {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)

    # ----------------------------------------------------------------------------------------- sampling

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
        return self.diffusion.generate(
            (num_samples, 1, size, size),
            generators,
            sampler=sampler or self.hparams.sampler,
            num_steps=num_steps if num_steps is not None else self.hparams.sample_steps,
            eta=eta,
            use_ema=use_ema,
        )

    def denoise_from(self, x_start: torch.Tensor, start_step: int, **kwargs: Any) -> torch.Tensor:
        """SDEdit from (B, 1, S, S) images in [0, 1]; see :meth:`DenoisingDiffusion.denoise_from`."""
        return self.diffusion.denoise_from(x_start, start_step, **kwargs)

    def predict_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Sample crops (B, 1, S, S) in [0, 1] for a batch of sample indices (B,)."""
        return self.generate(generators=self.sample_generators(batch))
