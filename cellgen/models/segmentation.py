"""Downstream segmenter: how well a model trained on some data segments real cells (the BVDM Table 1 protocol).

BVDM (Yilmaz et al., SASHIMI 2024, Sec. 3, Table 1) trains a segmentation/tracking method on real and on
synthetic videos and compares SEG/TRA on real test data. The method here is a compact U-Net that predicts two
maps (:mod:`cellgen.data.segmentation_data`): foreground and a per-cell normalised distance to the border.
Foreground + distance was chosen over foreground + boundary because one regression map gives both the watershed
seeds (cell cores, where the distance is high) and the flooding landscape, and stays well defined after
downscaling, where a 1-2 px boundary class thins out. Instances: watershed of the negated distance from those
seeds inside the foreground, then small objects removed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.segmentation import watershed

from cellgen.models.base import CellgenModule
from cellgen.nn.unet import UNet2D


def watershed_instances(
    foreground: np.ndarray,
    distance: np.ndarray,
    foreground_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 16,
) -> np.ndarray:
    """Instance labels (H, W) int32 from a foreground probability and a normalised distance map.

    Seeds are the connected cores ``distance > seed_threshold`` inside the foreground; a foreground component
    without a core gets one seed of its own (a cell whose distance peak came out low is kept, not dropped).
    Objects smaller than ``min_size`` pixels are merged into a touching object or removed; ids are consecutive.
    """
    mask = foreground > foreground_threshold
    seeds, count = ndimage.label(mask & (distance > seed_threshold))
    components, n_components = ndimage.label(mask)
    if n_components:
        seeded = np.zeros(n_components + 1, bool)
        seeded[np.unique(components[seeds > 0])] = True
        orphans = ~seeded[components] & mask
        seeds[orphans] = components[orphans] + count
    labels = watershed(-distance, seeds, mask=mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(sizes.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    labels = lut[labels]
    if not keep[1:].all():
        # Flood again from the kept objects: a small fragment joins the cell it touches, an isolated speck
        # (debris, noise) has no seed left and stays background.
        labels = watershed(-distance, labels, mask=mask).astype(np.int32)
    return labels


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice over the whole batch: insensitive to the foreground fraction, unlike BCE alone."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


class CellSegmenter(CellgenModule):
    """U-Net (B, 1, S, S) -> foreground logit and distance logit (B, 2, S, S), plus watershed post-processing.

    Args:
        base_channels: U-Net width of the first level.
        channel_mults: width multiplier per level; inputs are padded to ``2 ** (levels - 1)``.
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention per level (none by default: cells are local objects).
        dropout: dropout in residual blocks.
        lr: peak AdamW learning rate (one cycle: 5% warm-up, then cosine decay over the run's steps).
        weight_decay: AdamW weight decay.
        distance_weight: weight of the distance regression loss against foreground BCE + Dice.
        foreground_threshold: foreground probability above which a pixel is cell.
        seed_threshold: normalised distance above which a pixel is a cell core (watershed seed).
        min_size: smallest object kept, in pixels at the resolution the segmenter sees.
    """

    def __init__(
        self,
        base_channels: int = 16,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        attention_levels: Sequence[bool] | None = None,
        dropout: float = 0.0,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        distance_weight: float = 2.0,
        foreground_threshold: float = 0.5,
        seed_threshold: float = 0.5,
        min_size: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        levels = len(channel_mults)
        self.net = UNet2D(
            in_channels=1,
            out_channels=2,
            base_channels=base_channels,
            channel_mults=tuple(channel_mults),
            num_res_blocks=num_res_blocks,
            attention_levels=tuple(attention_levels) if attention_levels else (False,) * levels,
            time_conditioned=False,
            dropout=dropout,
        )
        self.size_factor = 2 ** (levels - 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, H, W) for normalised images (B, 1, H, W) of any size (reflect-padded internally)."""
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % self.size_factor, -width % self.size_factor
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
        return self.net(image)[..., :height, :width]

    def compute_loss(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BCE + soft Dice on the foreground, weighted MSE on the sigmoid distance map."""
        logits = self(batch["image"]).float()
        foreground, distance = batch["target"][:, :1], batch["target"][:, 1:]
        bce = F.binary_cross_entropy_with_logits(logits[:, :1], foreground)
        dice = soft_dice_loss(logits[:, :1], foreground)
        dist = F.mse_loss(torch.sigmoid(logits[:, 1:]), distance)
        loss = bce + dice + self.hparams.distance_weight * dist
        return loss, {"bce": bce.detach(), "dice": dice.detach(), "distance_mse": dist.detach()}

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        total = max(int(total), 1) if math.isfinite(total) else 10_000
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=total, pct_start=0.05
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Foreground probability and distance (B, 2, H, W) in [0, 1]."""
        return torch.sigmoid(self(batch["image"]))

    @torch.no_grad()
    def predict_maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability and distance map, each (H, W) float32, for one normalised image (H, W)."""
        was_training = self.training
        self.eval()
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(self.device)
        maps = torch.sigmoid(self(x).float())[0].cpu().numpy()
        self.train(was_training)
        return maps[0], maps[1]

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Instance labels (H, W) int32 of one normalised image (H, W)."""
        foreground, distance = self.predict_maps(image)
        hp = self.hparams
        return watershed_instances(foreground, distance, hp.foreground_threshold, hp.seed_threshold, hp.min_size)
