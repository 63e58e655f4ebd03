"""A 2-D U-Net serving three jobs: the MaskDDPM denoiser (step-conditioned), the VoxelMorph flow network and
the downstream segmenter (unconditioned)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.nn.blocks import ResBlock2d, SelfAttention2d, TimeEmbedding, group_count


class UNet2D(nn.Module):
    """U-Net with residual blocks, optional self-attention per level and optional diffusion-step conditioning.

    Args:
        in_channels: input channels.
        out_channels: output channels (epsilon for a denoiser, 2 for a flow field, classes for segmentation).
        base_channels: width of the first level.
        channel_mults: width multiplier per level; spatial size halves between levels.
        num_res_blocks: residual blocks per level on each side.
        attention_levels: per level, whether to add self-attention (cheap only at coarse levels).
        time_conditioned: embed a diffusion step ``t`` and condition every block on it.
        dropout: dropout inside residual blocks.
        heads: attention heads.

    Shapes:
        ``forward(x (B, in, H, W), t (B,) | None) -> (B, out, H, W)``; H and W divisible by
        ``2 ** (len(channel_mults) - 1)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[bool] = (False, False, True),
        time_conditioned: bool = True,
        dropout: float = 0.0,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if len(attention_levels) != len(channel_mults):
            raise ValueError("attention_levels needs one entry per channel_mults level")
        self.levels = len(channel_mults)
        time_dim = 4 * base_channels if time_conditioned else None
        self.time_embed = TimeEmbedding(base_channels, time_dim) if time_dim else None
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]

        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        current = base_channels
        for level, width in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock2d(current, width, time_dim, dropout))
                current = width
            self.down_blocks.append(nn.ModuleList(blocks))
            self.down_attn.append(SelfAttention2d(width, heads) if attention_levels[level] else nn.Identity())
            last = level == self.levels - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(width, width, 3, stride=2, padding=1))

        self.mid1 = ResBlock2d(current, current, time_dim, dropout)
        self.mid_attn = SelfAttention2d(current, heads) if any(attention_levels) else nn.Identity()
        self.mid2 = ResBlock2d(current, current, time_dim, dropout)

        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.levels)):
            width = widths[level]
            blocks = [ResBlock2d(current + width, width, time_dim, dropout)]
            blocks += [ResBlock2d(width, width, time_dim, dropout) for _ in range(num_res_blocks - 1)]
            current = width
            self.up_blocks.append(nn.ModuleList(blocks))
            self.up_attn.append(SelfAttention2d(width, heads) if attention_levels[level] else nn.Identity())
            first = level == 0
            self.upsample.append(nn.Identity() if first else nn.Conv2d(width, widths[level - 1], 3, padding=1))
            if not first:
                current = widths[level - 1]
        self.head = nn.Sequential(
            nn.GroupNorm(group_count(current), current), nn.SiLU(), nn.Conv2d(current, out_channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet2D input size {tuple(x.shape[-2:])} must be divisible by {factor}")
        emb = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this UNet2D is step-conditioned: pass t")
            emb = self.time_embed(t)
        h = self.stem(x)
        skips = []
        for blocks, attn, down in zip(self.down_blocks, self.down_attn, self.downsample, strict=True):
            for block in blocks:
                h = block(h, emb)
            h = attn(h)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blocks, attn, up in zip(self.up_blocks, self.up_attn, self.upsample, strict=True):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = attn(h)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)
