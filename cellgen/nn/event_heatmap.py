"""Plain-torch pieces of the heat-map mitosis detector: a frame-stack U-Net and the CenterNet focal loss.

Why a heat map: M3's blob head (Phan et al. 2019, Sec. III G) learns dilated 7x7x7 blocks with plain BCE; under
1 % positive voxels the BCE optimum stays far below any useful threshold and the components merge or vanish. A
Gaussian centre target with the penalty-reduced focal loss of CenterNet (Zhou et al. 2019, Eq. 1) is balanced by the
number of events, not of voxels, and the peaks of the output are the detections.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cellgen.nn.unet import UNet2D

PRIOR = 0.01  # initial sigmoid output of the heat-map logits (CenterNet: the bias starts at log(p / (1 - p)))


def init_heatmap_bias(conv: nn.Conv2d, prior: float = PRIOR) -> None:
    """Start a heat-map output at probability ``prior``: the loss of the many empty voxels is small from step 0."""
    if conv.bias is not None:
        nn.init.constant_(conv.bias, math.log(prior / (1 - prior)))


class FrameStackUNet(nn.Module):
    """Frames (B, 1, k, H, W) -> logits (B, 1, k, H, W): the k frames of a window are the channels of a 2-D U-Net.

    A division is a change of shape over a few frames at one place; stacking the frames lets the first convolution
    compare them directly, and the U-Net's depth gives a receptive field of several cell diameters at once (a one-
    layer ConvLSTM sees 3 + 2t pixels after t frames). H and W are padded (reflect) to a multiple of 4 and cropped
    back; a window shorter than k (a short movie) repeats its last frame.

    Args:
        window: frames per window k.
        base_channels: width of the first level.
        channel_mults: width multiplier per level.
    """

    def __init__(self, window: int, base_channels: int = 32, channel_mults: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        self.window = window
        self.unet = UNet2D(
            in_channels=window,
            out_channels=window,
            base_channels=base_channels,
            channel_mults=channel_mults,
            num_res_blocks=1,
            attention_levels=(False,) * len(channel_mults),
            time_conditioned=False,
        )
        self.factor = 2 ** (len(channel_mults) - 1)
        init_heatmap_bias(self.unet.head[-1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = frames.shape
        x = frames[:, 0]
        if t < self.window:
            x = torch.cat([x, x[:, -1:].expand(b, self.window - t, h, w)], dim=1)
        pad_h, pad_w = -h % self.factor, -w % self.factor
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.unet(x)[:, None, :t, :h, :w]


def heatmap_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """Penalty-reduced focal loss (CenterNet, Zhou et al. 2019, Eq. 1) of logits against a Gaussian heat map.

    Voxels where ``target == 1`` are event centres; every other voxel is a negative whose loss is scaled down by
    ``(1 - target) ** beta`` near a centre. The sum is divided by the number of centres (at least 1), so a batch
    with few events is not drowned by millions of empty voxels.

    Args:
        logits: (B, 1, T, H, W) raw outputs.
        target: same shape, in [0, 1], exactly 1 at each centre voxel.
    """
    logits = logits.float()
    positive = target >= 1.0 - 1e-4
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = ((1 - p) ** alpha * log_p)[positive].sum()
    neg_loss = ((1 - target) ** beta * p**alpha * log_not_p)[~positive].sum()
    return -(pos_loss + neg_loss) / positive.sum().clamp(min=1)


class FlipAveraged(nn.Module):
    """Test-time flips: the mean sigmoid over the 4 flips of (H, W) of a (B, 1, T, H, W) -> logits network.

    Returns logits of that mean, so it drops in wherever the network went (a division has no preferred direction).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(frames, dtype=torch.float32)
        for dims in ((), (-1,), (-2,), (-2, -1)):
            x = frames.flip(dims) if dims else frames
            out = torch.sigmoid(self.net(x))
            total += out.flip(dims) if dims else out
        return torch.logit(total / 4, eps=1e-6)
