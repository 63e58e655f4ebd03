"""Fréchet distance between Gaussians fitted to network features (the core of FID and FVD).

d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}).

The trace of the matrix square root is taken from the eigenvalues of S1 S2 instead of
``scipy.linalg.sqrtm``: S1 S2 is similar to the PSD matrix S1^{1/2} S2 S1^{1/2}, so its eigenvalues are real
and non-negative in exact arithmetic and tr((S1 S2)^{1/2}) = sum(sqrt(eig)). Taking real parts and
zeroing eigenvalues below the round-off floor keeps the result finite and unbiased when the covariances are
rank-deficient, which they always are with fewer samples than feature dimensions (e.g. 16 clips vs 400 I3D
logits), where sqrtm returns complex values or fails.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def gaussian_stats(features: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of features (N, D) with N >= 2."""
    x = torch.as_tensor(features).to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features (N, D) with N >= 2, got shape {tuple(x.shape)}")
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64."""
    mu1, mu2 = (torch.as_tensor(m).to(torch.float64).reshape(-1) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s).to(torch.float64) for s in (sigma1, sigma2))
    d = mu1.numel()
    if mu2.numel() != d or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu {d} vs {mu2.numel()}, sigma {sigma1.shape} vs {sigma2.shape}")
    eigenvalues = torch.linalg.eigvals(sigma1 @ sigma2)
    # Below d * eps * max|lambda| an eigenvalue is round-off; its square root (~1e-7 each, hundreds of them
    # when n < d) would otherwise bias the trace.
    floor = eigenvalues.abs().max() * d * torch.finfo(torch.float64).eps
    real = eigenvalues.real
    trace_sqrt = torch.where(real > floor, real, torch.zeros_like(real)).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(value.clamp_min(0))


def frechet_distance_of_features(features1: ArrayLike, features2: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
