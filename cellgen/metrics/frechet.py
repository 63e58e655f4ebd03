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


def frechet_distance_of_samples(features1: ArrayLike, features2: ArrayLike) -> float:
    """:func:`frechet_distance_of_features` through the samples instead of the D x D covariances.

    With centred features X1 (N1, D) and X2 (N2, D), S1 S2 = X1^T X1 X2^T X2 / ((N1 - 1)(N2 - 1)) has the nonzero
    eigenvalues of M M^T with M = X1 X2^T / sqrt((N1 - 1)(N2 - 1)), so tr((S1 S2)^{1/2}) is the sum of the
    singular values of the N1 x N2 matrix M: exact, and a few hundred times cheaper than a 2048 x 2048
    eigendecomposition when N << D, which is what makes resampling (:mod:`cellgen.metrics.frechet_bootstrap`) cheap.
    """
    x1, x2 = (torch.as_tensor(f).to(torch.float64) for f in (features1, features2))
    if x1.ndim != 2 or x2.ndim != 2 or min(len(x1), len(x2)) < 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"need features (N1, D) and (N2, D) with N >= 2, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = (x1 - mu1) / (len(x1) - 1) ** 0.5, (x2 - mu2) / (len(x2) - 1) ** 0.5
    trace_sqrt = torch.linalg.svdvals(c1 @ c2.T).sum()
    value = (mu1 - mu2).square().sum() + c1.square().sum() + c2.square().sum() - 2 * trace_sqrt
    return float(value.clamp_min(0))
