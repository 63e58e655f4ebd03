"""BVDM flow prediction model (FPM): VoxelMorph-style registration of consecutive cell masks.

Paper: Yilmaz, Eschweiler, Stegmaier, BVDM (SASHIMI 2024), Sec. 2: a VoxelMorph network (Balakrishnan et al.,
IEEE TMI 2019) predicts a dense flow between the masks of one cell in frames f and f+1; at synthesis the flow
warps the textured cell of frame f onto the mask of frame f+1 before a short SDEdit pass (t0 = 10) refines it.
Sec. 3: loss = MSE(warped M_f, M_f+1) + 0.01 * smoothness, Adam with learning rate 1e-4.

The network is our shared U-Net without step conditioning. The authors' VxmDense uses four 32-channel encoder
levels and no integration (``int_steps=0``); VoxelMorph's diffeomorphic variant integrates a stationary
velocity field by scaling and squaring (Dalca et al., MICCAI 2018, 7 steps), available via ``integrate_steps``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.flow import flow_smoothness_loss, integrate_velocity, warp_by_flow
from cellgen.models.base import CellgenModule, build_from, keep_keys_flat, with_defaults
from cellgen.nn.unet import UNet2D


class VoxelMorphNet(nn.Module):
    """The flow prediction model as a plain module: a U-Net from mask pairs to a dense flow (B, 2, H, W) in pixels.

    Convention (VoxelMorph, backward warping): ``warped(p) = M_f(p + flow(p))``, i.e.
    ``warp_by_flow(M_f, flow) ~ M_f+1``; apply the same ``warp_by_flow`` to frame f's texture. Built by
    :class:`VoxelMorphFPM` and :class:`~cellgen.models.bvdm.BVDM` from VoxelMorphFPM's arguments (the defaults
    live in its signature).
    """

    def __init__(
        self,
        *,
        base_channels: int,
        channel_mults: Sequence[int],
        num_res_blocks: int,
        integrate_steps: int,
        smoothness_weight: float,
        flow_init_std: float,
    ) -> None:
        super().__init__()
        if integrate_steps < 0:
            raise ValueError(f"integrate_steps must be >= 0, got {integrate_steps}")
        self.integrate_steps = integrate_steps
        self.smoothness_weight = smoothness_weight
        self.net = UNet2D(
            in_channels=2,
            out_channels=2,
            base_channels=base_channels,
            channel_mults=tuple(channel_mults),
            num_res_blocks=num_res_blocks,
            attention_levels=(False,) * len(channel_mults),
            time_conditioned=False,
        )
        head = self.net.head[-1]
        if not isinstance(head, nn.Conv2d):
            raise TypeError("UNet2D.head must end in a Conv2d for the VoxelMorph flow initialisation")
        nn.init.normal_(head.weight, std=flow_init_std)
        nn.init.zeros_(head.bias)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Flow (B, 2, H, W) in pixels from float masks src, tgt (B, 1, H, W) in [0, 1]."""
        flow = self.net(torch.cat([src, tgt], dim=1)).float()
        if self.integrate_steps:
            flow = integrate_velocity(flow, steps=self.integrate_steps)
        return flow

    @torch.no_grad()
    def flow_between(self, src_masks: torch.Tensor, tgt_masks: torch.Tensor) -> torch.Tensor:
        """Flow that carries each source cell onto its target mask, for all cells of a frame in one call.

        Args:
            src_masks: (B, 1, H, W) masks of frame f (binary, label or painted values: anything > 0 is cell).
            tgt_masks: (B, 1, H, W) masks of the same cells in frame f+1, on the same crop grid. H and W must
                be divisible by ``2 ** (len(channel_mults) - 1)``.

        Returns:
            (B, 2, H, W) float32 flow in pixels (channel 0 = x, 1 = y) for ``warp_by_flow(texture_f, flow)``.
        """
        if src_masks.shape != tgt_masks.shape or src_masks.ndim != 4 or src_masks.shape[1] != 1:
            raise ValueError(
                f"expected src and tgt masks of one shape (B, 1, H, W), got {tuple(src_masks.shape)} "
                f"and {tuple(tgt_masks.shape)}"
            )
        dtype = torch.float32
        return self(src_masks.gt(0).to(dtype), tgt_masks.gt(0).to(dtype))

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """VoxelMorph loss on mask pairs (B, 2, H, W): MSE of the warped source + weighted smoothness."""
        src, tgt = batch[:, :1].float(), batch[:, 1:2].float()
        flow = self(src, tgt)
        similarity = F.mse_loss(warp_by_flow(src, flow), tgt)
        smoothness = flow_smoothness_loss(flow)
        loss = similarity + self.smoothness_weight * smoothness
        return loss, {"mse": similarity.detach(), "smoothness": smoothness.detach()}


class VoxelMorphArgs(TypedDict, total=False):
    """BVDM's ``flow``: any of :class:`VoxelMorphFPM`'s arguments; unset ones take its defaults."""

    base_channels: int
    channel_mults: list[int]
    num_res_blocks: int
    integrate_steps: int
    smoothness_weight: float
    lr: float
    flow_init_std: float


def voxelmorph_settings(flow: Mapping[str, Any] | None) -> dict[str, Any]:
    """``flow`` completed with :class:`VoxelMorphFPM`'s defaults (they are written only in its signature)."""
    return with_defaults(VoxelMorphFPM, flow, "flow")


class VoxelMorphFPM(CellgenModule):
    """Predicts the flow (B, 2, H, W) in pixels (channel 0 = x, 1 = y) that warps M_f onto M_f+1.

    Training and prediction around :class:`VoxelMorphNet` (see its warping convention).

    Args:
        base_channels: U-Net width of the first level (VoxelMorph / the authors' VxmDense: 32).
        channel_mults: width multiplier per level; 5 levels = 4 downsamplings as in VxmDense, so crops must be
            divisible by 16.
        num_res_blocks: residual blocks per level (VoxelMorph uses one conv per level).
        integrate_steps: scaling-and-squaring steps that turn the output into a diffeomorphism
            (0 = off, as in the authors' BVDM code; VoxelMorph's diffeomorphic default is 7).
        smoothness_weight: weight of the flow-gradient penalty (BVDM Sec. 3: 0.01).
        lr: Adam learning rate (BVDM Sec. 3: 1e-4).
        flow_init_std: std of the flow head's initial weights; VoxelMorph uses N(0, 1e-5) so training starts
            from the identity warp.
    """

    def __init__(
        self,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 1, 1, 1, 1),
        num_res_blocks: int = 1,
        integrate_steps: int = 0,
        smoothness_weight: float = 0.01,
        lr: float = 1e-4,
        flow_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.fpm = build_from(VoxelMorphNet, self.hparams)
        keep_keys_flat(self, "fpm")  # checkpoints keep their keys: net.*

    @property
    def net(self) -> nn.Module:
        return self.fpm.net

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Flow (B, 2, H, W) in pixels from float masks src, tgt (B, 1, H, W) in [0, 1]."""
        return self.fpm(src, tgt)

    def flow_between(self, src_masks: torch.Tensor, tgt_masks: torch.Tensor) -> torch.Tensor:
        """See :meth:`VoxelMorphNet.flow_between`."""
        return self.fpm.flow_between(src_masks, tgt_masks)

    def compute_loss(self, batch: torch.Tensor, stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """VoxelMorph loss on mask pairs (B, 2, H, W): MSE of the warped source + weighted smoothness."""
        return self.fpm.loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def predict_step(self, batch: torch.Tensor, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """For mask pairs (B, 2, H, W): the flow (B, 2, H, W) and the warped source mask (B, 1, H, W)."""
        src, tgt = batch[:, :1], batch[:, 1:2]
        flow = self.flow_between(src, tgt)
        return {"flow": flow, "warped": warp_by_flow(src.float(), flow)}
