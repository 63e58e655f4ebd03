"""Space-time factorised 3-D U-Net (Ho et al. 2022, "Video Diffusion Models", Sec. 3), the video denoiser.

Per level: two residual blocks of (1 x 3 x 3) convolutions conditioned on the diffusion step (scale and shift),
then spatial attention and temporal attention; down- and upsampling act on H and W only, so T is never
mixed by a convolution and the network runs on any number of frames. The layout follows the reference
implementation the paper adapts (lucidrains' video-diffusion-pytorch ``Unet3D``): one skip per level, full
spatial attention in the middle, efficient (linear) spatial attention at the finer levels.

Speed: every convolution is a 2-D convolution over a channels-last batch of frames (:class:`FrameConv`),
normalisation is fused ``GroupNorm``, attention goes through ``scaled_dot_product_attention``, heads are
``channels / head_channels`` wide (the reference projects every level to 8 x 32 channels), and there are no
rotary embeddings or Python loops over frames or pixels. Axis moves are einops ``rearrange`` patterns, which
name the axes and compile to the same views and permutes as hand-written reshapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.nn.attention import (
    ChannelLinear,
    FrameConv,
    SpaceTimeAttention,
    batch_as_frames,
    frames_as_batch,
    recompute_in_backward,
)
from cellgen.nn.blocks import TimeEmbedding, group_count


class ResBlock3d(nn.Module):
    """GroupNorm-SiLU-(1x3x3)conv residual block with FiLM (scale, shift) conditioning on the step embedding.

    GroupNorm statistics span the whole video (T, H, W), so the network sees intensity changes across frames.
    With ``recompute`` the two norm-FiLM-SiLU stretches are recomputed in the backward pass instead of stored
    (:func:`~cellgen.nn.attention.recompute_in_backward`): elementwise work, but four of the block's seven
    stored activations.

    Shapes: x (B, C_in, T, H, W), emb (B, time_dim) -> (B, C_out, T, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_dim: int | None = None,
        dropout: float = 0.0,
        recompute: bool = False,
    ) -> None:
        super().__init__()
        self.recompute = recompute
        self.norm1 = nn.GroupNorm(group_count(in_channels), in_channels)
        self.conv1 = FrameConv(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, 2 * out_channels) if time_dim else None
        self.norm2 = nn.GroupNorm(group_count(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = FrameConv(out_channels, out_channels, 3, padding=1)
        self.skip = ChannelLinear(in_channels, out_channels) if in_channels != out_channels else nn.Identity()

    def _norm_act(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm1(x))

    def _norm_film_act(self, h: torch.Tensor, film: torch.Tensor | None) -> torch.Tensor:
        h = self.norm2(h)
        if film is not None:
            scale, shift = film.chunk(2, dim=1)
            h = torch.addcmul(shift, h, 1 + scale)
        return F.silu(h)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        film = self.time(F.silu(emb))[:, :, None, None, None] if self.time is not None and emb is not None else None
        h = self.conv1(recompute_in_backward(self.recompute, self._norm_act, x))
        h = recompute_in_backward(self.recompute, self._norm_film_act, h, film)
        return self.conv2(self.dropout(h)) + self.skip(x)


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x in H and W (not T), then a 3x3 convolution. (B, C_in, T, H, W) -> (B, C_out, T, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = F.interpolate(frames_as_batch(x), scale_factor=2.0, mode="nearest")
        return batch_as_frames(self.conv(frames), x.shape[0])


def check_spatial_size(x: torch.Tensor, levels: int) -> None:
    """Raise a readable error when H or W of (B, C, T, H, W) cannot be halved ``levels - 1`` times."""
    factor = 2 ** (levels - 1)
    if x.ndim != 5 or x.shape[-1] % factor or x.shape[-2] % factor:
        raise ValueError(f"expected (B, C, T, H, W) with H and W divisible by {factor}, got {tuple(x.shape)}")


class UNet3D(nn.Module):
    """Step-conditioned space-time U-Net for video diffusion (defaults: the reference ``Unet3D(dim=32, (1, 2, 4))``).

    Args:
        in_channels: input channels (1 for phase-contrast videos; 3 with flow channels U and V).
        out_channels: output channels (default: ``in_channels``; epsilon for every channel).
        base_channels: width of the first level.
        channel_mults: width multiplier per level; H and W halve between levels.
        num_res_blocks: residual blocks per level on each side (Ho et al. 2022: 2).
        spatial_attention: per level, ``"linear"``, ``"full"`` or ``"none"``; the middle always has full attention.
        head_channels: channels per attention head.
        max_distance: largest frame offset with its own learned temporal bias.
        dropout: dropout inside residual blocks.
        channels_last: keep activations channels-last (fastest for 2-D convolutions on CPU and GPU).
        recompute: recompute norms, activations and attention in the backward pass instead of storing them
            (about half the training memory for a few percent more time; no effect without gradients).

    Shapes:
        ``forward(x (B, in, T, H, W), t (B,)) -> (B, out, T, H, W)``; H and W divisible by
        ``2 ** (len(channel_mults) - 1)``, any T.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        spatial_attention: Sequence[str] = ("linear", "linear", "linear"),
        head_channels: int = 32,
        max_distance: int = 32,
        dropout: float = 0.0,
        channels_last: bool = True,
        recompute: bool = True,
    ) -> None:
        super().__init__()
        if len(spatial_attention) != len(channel_mults):
            raise ValueError("spatial_attention needs one entry per channel_mults level")
        self.levels = len(channel_mults)
        self.channels_last = channels_last
        out_channels = out_channels or in_channels
        time_dim = 4 * base_channels
        self.time_embed = TimeEmbedding(base_channels, time_dim)
        self.stem = FrameConv(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * m for m in channel_mults]

        self.head_channels, self.max_distance = head_channels, max_distance
        attention = self.make_attention
        self.down = nn.ModuleList()
        current = base_channels
        for level, width in enumerate(widths):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock3d(current, width, time_dim, dropout))
                current = width
            last = level == self.levels - 1
            down = nn.Identity() if last else FrameConv(width, width, 3, stride=2, padding=1)
            self.down.append(
                nn.ModuleDict(
                    {"blocks": nn.ModuleList(blocks), "attn": attention(width, spatial_attention[level]), "down": down}
                )
            )

        self.mid1 = ResBlock3d(current, current, time_dim, dropout)
        self.mid_attn = attention(current, "full")
        self.mid2 = ResBlock3d(current, current, time_dim, dropout)

        self.up = nn.ModuleList()
        for level in reversed(range(self.levels)):
            width = widths[level]
            blocks = [ResBlock3d(current + width, width, time_dim, dropout)]
            blocks += [ResBlock3d(width, width, time_dim, dropout) for _ in range(num_res_blocks - 1)]
            current = width
            up = nn.Identity() if level == 0 else Upsample2x(width, widths[level - 1])
            self.up.append(
                nn.ModuleDict(
                    {"blocks": nn.ModuleList(blocks), "attn": attention(width, spatial_attention[level]), "up": up}
                )
            )
            if level:
                current = widths[level - 1]
        self.head = nn.Sequential(
            nn.GroupNorm(group_count(current), current), nn.SiLU(), FrameConv(current, out_channels, 3, padding=1)
        )
        self.set_recompute(recompute)
        if channels_last:
            self.to(memory_format=torch.channels_last)  # 4-D conv weights; others are unaffected

    def set_recompute(self, enabled: bool) -> None:
        """Switch backward-pass recomputation on or off in every block (see ``recompute``)."""
        for module in self.modules():
            if isinstance(module, (ResBlock3d, SpaceTimeAttention)):
                module.recompute = enabled

    def make_attention(self, width: int, spatial: str) -> SpaceTimeAttention:
        """A space-time attention block of ``width`` channels (heads of at most ``head_channels``)."""
        return SpaceTimeAttention(width, min(self.head_channels, width), spatial, self.max_distance)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_spatial_size(x, self.levels)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        emb = self.time_embed(t)
        h = self.stem(x)
        skips = []
        for level in self.down:
            for block in level["blocks"]:
                h = block(h, emb)
            h = level["attn"](h)
            skips.append(h)
            h = level["down"](h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for block in level["blocks"]:
                h = block(h, emb)
            h = level["up"](level["attn"](h))
        return self.head(h).contiguous()


class FlowBranch(nn.Module):
    """One flow stream (U or V) of :class:`FlowUNet3D`: per level a single convolution to the level width and a
    factorised space-time attention, no residual blocks and no step conditioning (paper Sec. 3.2, Fig. 1).

    Shapes: the stream is (B, w_level, T, H_level, W_level) at each level.
    """

    def __init__(self, widths: Sequence[int], make_attention, base_channels: int) -> None:  # noqa: ANN001
        super().__init__()
        levels = len(widths)
        self.stem = FrameConv(1, base_channels, 3, padding=1)
        self.down, self.downsample, self.up, self.upsample = (nn.ModuleList() for _ in range(4))
        current = base_channels
        for level, width in enumerate(widths):
            self.down.append(nn.Sequential(FrameConv(current, width, 3, padding=1), make_attention(width, level)))
            current = width
            last = level == levels - 1
            self.downsample.append(nn.Identity() if last else FrameConv(width, width, 3, stride=2, padding=1))
        self.mid = make_attention(current, None)
        for level in reversed(range(levels)):
            width = widths[level]
            self.up.append(nn.Sequential(FrameConv(current + width, width, 3, padding=1), make_attention(width, level)))
            current = width
            self.upsample.append(nn.Identity() if level == 0 else Upsample2x(width, widths[level - 1]))
            if level:
                current = widths[level - 1]


class FlowFusion(nn.Module):
    """Merge U and V (concatenate, space-time attention, halve), then merge the result into the video stream
    (concatenate, halve by a pointwise convolution): paper Sec. 3.2, Fig. 1.

    Shapes: video, u, v each (B, w, T, H, W) -> (B, w, T, H, W).
    """

    def __init__(self, width: int, attention: nn.Module) -> None:
        super().__init__()
        self.flow_attn = attention
        self.flow_halve = ChannelLinear(2 * width, width)
        self.video_halve = ChannelLinear(2 * width, width)

    def forward(self, video: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        flow = self.flow_halve(self.flow_attn(torch.cat([u, v], dim=1)))
        return self.video_halve(torch.cat([video, flow], dim=1))


class FlowUNet3D(UNet3D):
    """Denoiser of the optical-flow video diffusion model (paper Sec. 3.2, Fig. 1) for (I, U, V) videos.

    The video channel I runs through the baseline :class:`UNet3D` (residual blocks conditioned on the step, and
    attention); U and V each run through their own :class:`FlowBranch`. At every level (down, middle, up) the two
    flow streams are merged and fused into the video stream (:class:`FlowFusion`), whose output is the level's
    skip and feeds the next level. The head predicts the noise of all three channels.

    Args: as :class:`UNet3D` (``in_channels`` and ``out_channels`` are fixed at 3).

    Shapes: ``forward(x (B, 3, T, H, W), t (B,)) -> (B, 3, T, H, W)``; channel order I, U, V.
    """

    def __init__(
        self,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        spatial_attention: Sequence[str] = ("linear", "linear", "linear"),
        head_channels: int = 32,
        max_distance: int = 32,
        dropout: float = 0.0,
        channels_last: bool = True,
        recompute: bool = True,
    ) -> None:
        super().__init__(
            1,
            3,
            base_channels,
            channel_mults,
            num_res_blocks,
            spatial_attention,
            head_channels,
            max_distance,
            dropout,
            channels_last=False,
        )
        self.channels_last = channels_last
        widths = [base_channels * m for m in channel_mults]

        def make_attention(width: int, level: int | None) -> SpaceTimeAttention:
            return self.make_attention(width, "full" if level is None else spatial_attention[level])

        self.flow_u = FlowBranch(widths, make_attention, base_channels)
        self.flow_v = FlowBranch(widths, make_attention, base_channels)
        levels = range(len(widths))
        self.fuse_down = nn.ModuleList(
            FlowFusion(w, make_attention(2 * w, lvl)) for lvl, w in zip(levels, widths, strict=True)
        )
        self.fuse_mid = FlowFusion(widths[-1], make_attention(2 * widths[-1], None))
        self.fuse_up = nn.ModuleList(
            FlowFusion(widths[lvl], make_attention(2 * widths[lvl], lvl)) for lvl in levels[::-1]
        )
        self.set_recompute(recompute)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_spatial_size(x, self.levels)
        if x.shape[1] != 3:
            raise ValueError(f"FlowUNet3D expects (B, 3, T, H, W) videos with channels I, U, V, got {tuple(x.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        emb = self.time_embed(t)
        h, u, v = self.stem(x[:, :1]), self.flow_u.stem(x[:, 1:2]), self.flow_v.stem(x[:, 2:])
        skips = []
        for i, level in enumerate(self.down):
            for block in level["blocks"]:
                h = block(h, emb)
            u, v = self.flow_u.down[i](u), self.flow_v.down[i](v)
            h = self.fuse_down[i](level["attn"](h), u, v)
            skips.append((h, u, v))
            h, u, v = level["down"](h), self.flow_u.downsample[i](u), self.flow_v.downsample[i](v)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        h = self.fuse_mid(h, self.flow_u.mid(u), self.flow_v.mid(v))
        for i, level in enumerate(self.up):
            skip_h, skip_u, skip_v = skips.pop()
            h = torch.cat([h, skip_h], dim=1)
            for block in level["blocks"]:
                h = block(h, emb)
            u = self.flow_u.up[i](torch.cat([u, skip_u], dim=1))
            v = self.flow_v.up[i](torch.cat([v, skip_v], dim=1))
            h = self.fuse_up[i](level["attn"](h), u, v)
            h, u, v = level["up"](h), self.flow_u.upsample[i](u), self.flow_v.upsample[i](v)
        return self.head(h).contiguous()
