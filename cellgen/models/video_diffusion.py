"""Unconditional video diffusion on phase-contrast patch videos: the baseline of the optical-flow paper.

Paper: "Neural Cell Video Synthesis via Optical-Flow Diffusion" (Serna-Aguilera et al.). The baseline is the video
diffusion model of Ho et al. 2022 as implemented in lucidrains' video-diffusion-pytorch, which the paper adapts:
epsilon prediction, cosine schedule with T = 1000 steps, L1 loss on the noise, Adam with learning rate 1e-4, an EMA
copy of the weights (decay 0.995) for sampling. Data: 10-frame 128 x 128 patch videos with every channel in [0, 1]
(Sec. 4.2-4.3), mapped here to [-1, 1] (Ho et al. 2020, Sec. 3.3); flips come from the datamodule.

:class:`~cellgen.models.flow_video_diffusion.FlowVideoDiffusion` reuses all of this and swaps the denoiser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from cellgen.diffusion.guidance import frame_mask, sample_with_known
from cellgen.diffusion.model import DenoisingDiffusion
from cellgen.models.diffusion_module import DiffusionModule
from cellgen.nn.unet3d import UNet3D


class VideoDiffusion(DiffusionModule):
    """Epsilon-prediction DDPM on videos (B, C, T, H, W) with an EMA copy of the denoiser for sampling.

    Args:
        channels: video channels (1: phase-contrast intensity).
        num_frames: frames per video T (paper Sec. 4.2: 10); must match the datamodule's ``num_frames``.
        image_size: height and width (paper Sec. 4.2: 128); must match the datamodule's ``patch_size``.
        base_channels: U-Net width of the first level.
        channel_mults: U-Net width multiplier per level (reference defaults: base 64, (1, 2, 4, 8)).
        num_res_blocks: residual blocks per level (Ho et al. 2022: 2).
        spatial_attention: per level ``"linear"``, ``"full"`` or ``"none"`` (reference: linear at every level,
            full attention in the middle).
        head_channels: channels per attention head (reference: 32).
        dropout: dropout inside residual blocks.
        recompute: recompute norms, activations and attention in the backward pass instead of storing them
            (ours: about a third less training memory for about a quarter more time).
        schedule: noise schedule, ``cosine`` (reference) or ``linear``.
        num_timesteps: diffusion steps T (reference: 1000).
        loss: ``l1`` (paper and reference) or ``l2`` on the prediction.
        prediction: ``eps`` (paper and reference: the network predicts the noise) or ``v`` (Salimans & Ho 2022;
            ours: keeps the generated videos' brightness that of the data, see :class:`DenoisingDiffusion`).
        lr: Adam learning rate (reference: 1e-4).
        betas: Adam betas (PyTorch defaults, as in the reference).
        ema_decay: EMA decay of the sampling weights (reference: 0.995); None disables the EMA copy. The decay
            warms up as ``min(decay, (1 + n) / (10 + n))`` so short runs still sample well.
        sampler: ``ddim`` or ``ddpm`` (ancestral, every step) for ``predict`` and sample logging.
        sampling_steps: DDIM steps for ``predict`` (ignored by ``ddpm``).
        eta: DDIM stochasticity (0 = deterministic given the initial noise).
        seed: base seed of predicted samples; sample ``i`` uses ``seed * 1_000_003 + i``, so a sample never
            depends on the batch size or the number of devices.
        predict_frames: frames of a predicted video (None: ``num_frames``); longer videos are extended chunk by
            chunk (:meth:`extend`).
        extend_overlap: frames of the previous chunk each new chunk is conditioned on (None: half of
            ``num_frames``); a chunk adds ``num_frames - extend_overlap`` frames.
        guidance_weight: reconstruction-guidance weight w_r on the overlapping frames (Ho et al. 2022, Sec. 3.1:
            w_r > 1 is better); 0 is the replacement method.
    """

    def __init__(
        self,
        channels: int = 1,
        num_frames: int = 10,
        image_size: int = 128,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        spatial_attention: Sequence[str] | None = None,
        head_channels: int = 32,
        dropout: float = 0.0,
        recompute: bool = True,
        schedule: Literal["cosine", "linear"] = "cosine",
        num_timesteps: int = 1000,
        loss: Literal["l1", "l2"] = "l1",
        prediction: Literal["eps", "v"] = "eps",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        ema_decay: float | None = 0.995,
        sampler: Literal["ddim", "ddpm"] = "ddim",
        sampling_steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
        predict_frames: int | None = None,
        extend_overlap: int | None = None,
        guidance_weight: float = 4.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        overlap = num_frames // 2 if extend_overlap is None else extend_overlap
        if not 1 <= overlap < num_frames:
            raise ValueError(f"extend_overlap must lie in [1, {num_frames - 1}] (num_frames - 1), got {overlap}")
        factor = 2 ** (len(channel_mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by {factor} for {len(channel_mults)} levels")
        diffusion = DenoisingDiffusion(
            self.build_denoiser(), schedule, num_timesteps, ema_decay, loss=loss, prediction=prediction
        )
        self.set_diffusion(diffusion)

    def build_denoiser(self) -> nn.Module:
        """The network ``(x_t (B, C, T, H, W), t (B,)) -> eps (B, C, T, H, W)``; subclasses swap it."""
        hp = self.hparams
        return UNet3D(
            in_channels=hp.channels,
            base_channels=hp.base_channels,
            channel_mults=tuple(hp.channel_mults),
            num_res_blocks=hp.num_res_blocks,
            spatial_attention=tuple(hp.spatial_attention or ["linear"] * len(hp.channel_mults)),
            head_channels=hp.head_channels,
            dropout=hp.dropout,
            recompute=hp.recompute,
        )

    # ----------------------------------------------------------------------------------------- helpers

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one generated video."""
        hp = self.hparams
        return hp.channels, hp.num_frames, hp.image_size, hp.image_size

    # ----------------------------------------------------------------------------------------- training

    def compute_loss(self, batch: torch.Tensor, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """DDPM loss (Ho et al. 2020, Eq. 14) with L1 or L2 between true and predicted noise at a random step.

        Args:
            batch: (B, C, T, H, W) videos in [0, 1].
        """
        if tuple(batch.shape[1:]) != self.video_shape:
            raise ValueError(
                f"{type(self).__name__} is set up for (C, T, H, W) = {self.video_shape} but the data yields "
                f"{tuple(batch.shape[1:])}: set model channels/num_frames/image_size to match the datamodule"
            )
        return self.diffusion.loss(batch), {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr, betas=tuple(self.hparams.betas))

    # ----------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def generate(
        self,
        generators: Sequence[torch.Generator],
        sampler: Literal["ddim", "ddpm"] | None = None,
        num_steps: int | None = None,
        eta: float | None = None,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """Sample videos from pure noise, one per generator (bf16 autocast on GPU, fp32 arithmetic in the sampler).

        Args:
            generators: one torch.Generator per sample, on this module's device (see :meth:`sample_generators`).
            sampler: ``ddim`` or ``ddpm`` (default: the ``sampler`` hyperparameter).
            num_steps: DDIM steps (default: ``sampling_steps``); ignored by ``ddpm``.
            eta: DDIM stochasticity (default: the ``eta`` hyperparameter).
            use_ema: sample with the EMA weights when present.

        Returns:
            (B, C, T, H, W) videos in [0, 1].
        """
        sampler = sampler or self.hparams.sampler
        return self.diffusion.generate(
            (len(generators), *self.video_shape),
            generators,
            sampler=sampler,
            num_steps=(num_steps or self.hparams.sampling_steps) if sampler == "ddim" else None,
            eta=self.hparams.eta if eta is None else eta,
            use_ema=use_ema,
            autocast=self.device.type == "cuda",
        )

    # ----------------------------------------------------------------------------------------- any length

    #: channels the overlapping frames fix when extending (None: all); the flow model fixes intensity only.
    conditioning_channels: tuple[int, ...] | None = None

    def splice(self, video: torch.Tensor, chunk: torch.Tensor, overlap: int) -> torch.Tensor:
        """Append the new frames of ``chunk`` (B, C, T, H, W), whose first ``overlap`` frames repeat the end of
        ``video`` (B, C, T', H, W); subclasses with per-transition channels (flow) splice those differently."""
        return torch.cat([video, chunk[:, :, overlap:]], dim=2)

    @torch.no_grad()
    def extend(
        self,
        videos: torch.Tensor,
        num_frames: int,
        generators: Sequence[torch.Generator],
        overlap: int | None = None,
        guidance_weight: float | None = None,
        num_steps: int | None = None,
        eta: float | None = None,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """Extend videos autoregressively to ``num_frames`` frames (Ho et al. 2022, Sec. 3.1).

        Each new ``T``-frame chunk is sampled with its first ``overlap`` frames fixed to the last ``overlap`` frames
        so far (:func:`~cellgen.diffusion.guidance.sample_with_known`, reconstruction guidance with weight w_r) and
        its remaining frames appended, so a 10-frame model makes videos of any length.

        Args:
            videos: (B, C, T0, H, W) in [0, 1] with T0 >= ``overlap``.
            num_frames: frames wanted; a shorter request returns the first ``num_frames`` frames.
            generators: one per video; they carry on from wherever the caller left them.
            overlap: frames each chunk is conditioned on (default: ``extend_overlap``).
            guidance_weight: w_r (default: the ``guidance_weight`` hyperparameter).
            num_steps: DDIM steps per chunk (default: ``sampling_steps``).
            eta: DDIM stochasticity (default: the ``eta`` hyperparameter).
            use_ema: sample with the EMA weights when present.

        Returns:
            (B, C, num_frames, H, W) in [0, 1].
        """
        hp = self.hparams
        overlap = overlap or hp.extend_overlap or hp.num_frames // 2
        if not 1 <= overlap < hp.num_frames or videos.shape[2] < overlap:
            raise ValueError(f"overlap must lie in [1, {hp.num_frames - 1}] and within the {videos.shape[2]} frames")
        weight = hp.guidance_weight if guidance_weight is None else guidance_weight
        diffusion = self.diffusion
        mask = frame_mask((1, hp.channels, hp.num_frames), slice(0, overlap), self.conditioning_channels, self.device)
        denoise = diffusion.denoise_fn(use_ema)
        video = diffusion.to_model_range(videos.to(self.device).float())
        while video.shape[2] < num_frames:
            known = torch.zeros(len(video), *self.video_shape, device=self.device)
            known[:, :, :overlap] = video[:, :, -overlap:]
            chunk = sample_with_known(
                denoise,
                diffusion.schedule,
                known,
                mask,
                weight=weight,
                num_steps=num_steps or hp.sampling_steps,
                eta=hp.eta if eta is None else eta,
                generator=list(generators),
                clip_x0=diffusion.model_range,
            )
            video = self.splice(video, chunk, overlap)
        return diffusion.from_model_range(video[:, :, :num_frames])

    def generate_frames(
        self,
        generators: Sequence[torch.Generator],
        num_frames: int | None = None,
        num_steps: int | None = None,
        eta: float | None = None,
        overlap: int | None = None,
        guidance_weight: float | None = None,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """Videos of any length: :meth:`generate` one chunk, then :meth:`extend` it with the same generators.

        Args:
            generators: one per video (:meth:`sample_generators`).
            num_frames: frames per video (default: ``predict_frames``, else ``num_frames``).
            num_steps, eta: DDIM steps and stochasticity (defaults: the hyperparameters).
            overlap, guidance_weight: see :meth:`extend`.
            use_ema: sample with the EMA weights when present.

        Returns:
            (B, C, num_frames, H, W) in [0, 1].
        """
        num_frames = num_frames or self.hparams.predict_frames or self.hparams.num_frames
        videos = self.generate(generators, "ddim", num_steps, eta, use_ema)
        if num_frames <= videos.shape[2]:
            return videos[:, :, :num_frames]
        return self.extend(videos, num_frames, generators, overlap, guidance_weight, num_steps, eta, use_ema)

    def outputs(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a user receives for generated videos (B, C, T, H, W): ``{"video": (B, 1, T, H, W) in [0, 1]}``."""
        return {"video": videos.float().cpu()}

    def predict_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Generate one video of ``predict_frames`` frames per global sample index in ``batch`` (B,).

        Returns:
            ``{"index": (B,) long, **outputs(videos)}`` for the prediction writer.
        """
        return {"index": batch.detach().cpu(), **self.outputs(self.generate_frames(self.sample_generators(batch)))}
