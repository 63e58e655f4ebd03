"""Optical-flow video diffusion: videos denoised together with their Horn-Schunck flow (U, V).

Paper: "Neural Cell Video Synthesis via Optical-Flow Diffusion" (Serna-Aguilera et al.), Sec. 3.2 and Fig. 1.
The data are 3-channel videos (I, U, V), each channel in [0, 1] per video (Sec. 4.3,
:class:`~cellgen.data.flow_patch_video.FlowPatchVideoDataModule`). The denoiser keeps the baseline's video branch
and adds a branch per flow component whose features are merged into the video branch at every scale
(:class:`~cellgen.nn.unet3d.FlowUNet3D`). Training, EMA and sampling are those of
:class:`~cellgen.models.video_diffusion.VideoDiffusion`; only the denoiser and the channel count differ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cellgen.data.flow_patch_video import denormalise_flow
from cellgen.models.video_diffusion import VideoDiffusion
from cellgen.nn.unet3d import FlowUNet3D


class FlowVideoDiffusion(VideoDiffusion):
    """Video diffusion on (I, U, V) videos with the flow-branch denoiser of paper Sec. 3.2.

    Generated U and V are in the [0, 1] normalised space of the data; they are mapped back to pixels per frame
    with ``flow_range``, the median per-video (min, max) of the training data, recorded when ``fit`` starts and
    saved in the checkpoint.

    Args:
        channels: must be 3 (I, U, V).
        **kwargs: every other argument of :class:`~cellgen.models.video_diffusion.VideoDiffusion` (LightningCLI
            lists them with their types: ``cellgen fit --model FlowVideoDiffusion --help``).
    """

    def __init__(self, channels: int = 3, **kwargs: Any) -> None:
        if channels != 3:
            raise ValueError(f"FlowVideoDiffusion denoises 3 channels (I, U, V), got channels={channels}")
        super().__init__(channels=channels, **kwargs)
        # [channel (U, V), (min, max)] in pixels per frame; symmetric unit range until fit records the data's.
        self.register_buffer("flow_range", torch.tensor([[-1.0, 1.0], [-1.0, 1.0]]))

    def build_denoiser(self) -> nn.Module:
        hp = self.hparams
        return FlowUNet3D(
            base_channels=hp.base_channels,
            channel_mults=tuple(hp.channel_mults),
            num_res_blocks=hp.num_res_blocks,
            spatial_attention=tuple(hp.spatial_attention or ["linear"] * len(hp.channel_mults)),
            head_channels=hp.head_channels,
            dropout=hp.dropout,
            recompute=hp.recompute,
        )

    # Extension fixes the intensity of the overlapping frames only: each chunk's flow is min-max normalised on its own
    # (as the training videos were), so the previous chunk's normalised flow values are not this chunk's.
    conditioning_channels = (0,)

    def splice(self, video: torch.Tensor, chunk: torch.Tensor, overlap: int) -> torch.Tensor:
        """Intensity: the new frames. Flow frame k is the motion k -> k+1 (the last one a copy): the new chunk
        supplies every transition from the last overlapping frame on, replacing the old chunk's final copy."""
        intensity = torch.cat([video[:, :1], chunk[:, :1, overlap:]], dim=2)
        flow = torch.cat([video[:, 1:, :-1], chunk[:, 1:, overlap - 1 :]], dim=2)
        return torch.cat([intensity, flow], dim=1)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "typical_flow_range"):
            self.flow_range.copy_(torch.as_tensor(datamodule.typical_flow_range()))

    def outputs(self, videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generated (I, U, V) videos (B, 3, T, H, W) -> ``{"video": (B, 1, T, H, W) in [0, 1], "flow": (B, 2, T-1,
        H, W) pixels per frame}``; the last flow frame (a copy of the one before it in the training data) is dropped.
        """
        videos = videos.float().cpu()
        return {"video": videos[:, :1], "flow": denormalise_flow(videos[:, 1:, :-1], self.flow_range.cpu())}
